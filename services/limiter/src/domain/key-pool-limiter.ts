import { DEFAULT_HOLD_TTL_MS, type AcquireDecision, type KeyCandidates, type KeyRef, type LeaseCandidates, type LimiterStore } from '../store/store';
import { InvalidPoolSpecError, UnknownKeyError, UnknownPoolError } from './errors';
import { findPoolSpecProblems, freezePoolSpecs, MAX_WINDOW_REQUESTS } from './pool-spec';
import { DEFAULT_QUOTA_RESETS, nextQuotaResetMs, type QuotaResets } from './quota-period';
import type {
  LeaseReturn,
  LeaseRequest,
  LeaseResult,
  AcquireRequest,
  AcquireResult,
  KeyConditionState,
  KeyOutcome,
  KeyState,
  HoldRef,
  PoolSpec,
  Settlement,
  WindowLimit,
} from './types';

/**
 * A batch may name a pool this limiter has not applied yet: the router and the
 * limiter follow the same policy update, but not in the same instant (adding a
 * tenant's limit adds a pool). That request is denied briefly, as a full pool
 * would be, instead of failing every other pool of its batch.
 */
const NOT_YET_KNOWN_RETRY_MS = 250;
const NOT_YET_KNOWN: AcquireResult = Object.freeze({ granted: false, retryAfterMs: NOT_YET_KNOWN_RETRY_MS, reason: 'KEY_POOL_EXHAUSTED' });

/** The condition reason of a key whose provider quota is spent until its next period. */
export const QUOTA_EXHAUSTED_REASON = 'quota exhausted';

/** How long a 429 cools a key when the provider didn't say. */
export const DEFAULT_COOLING_MS = 1000;

interface PoolIndex {
  readonly keyIds: readonly string[];
  readonly keyIdSet: ReadonlySet<string>;
  readonly quotaResets: QuotaResets;
  /** Per key, its burst windows as "<requests>:<perMs>" (stores keep no such mark). */
  readonly burstWindows: ReadonlyMap<string, ReadonlySet<string>>;
}

/**
 * Decides which key of a pool may take a request now, and learns from what the
 * providers answered. Config lookups live here (built once per applyPools);
 * per-key state and the choice itself live in the store, so that with Redis the
 * choice is one atomic script shared by every replica.
 *
 * Time comes only from the nowMs arguments.
 */
export class KeyPoolLimiter {
  private pools: ReadonlyMap<string, PoolIndex> = new Map();
  /** applyPools calls run one at a time, so the store and the index swap in the same order. */
  private applying: Promise<void> = Promise.resolve();

  /**
   * holdTtlMs: how long a hold on a key with a concurrency cap lasts unless
   * renewed; a holder that dies frees its slot that long after its last renewal.
   */
  constructor(
    private readonly store: LimiterStore,
    readonly holdTtlMs: number = DEFAULT_HOLD_TTL_MS,
  ) {}

  /**
   * Validates the whole set, then replaces it. Unchanged keys keep their
   * windows and condition; see LimiterStore.configure for changed keys.
   * Throws InvalidPoolSpecError (listing every problem) and changes nothing.
   */
  applyPools(pools: readonly PoolSpec[]): Promise<void> {
    const problems = findPoolSpecProblems(pools);
    if (problems.length > 0) return Promise.reject(new InvalidPoolSpecError(problems));
    const specs = freezePoolSpecs(pools);
    const next = new Map<string, PoolIndex>();
    for (const pool of pools) {
      const keyIds = Object.freeze(pool.keys.map((key) => key.keyId));
      const quotaResets = Object.freeze({ ...(pool.quotaResets ?? DEFAULT_QUOTA_RESETS) });
      const burstWindows = new Map(pool.keys.map((key) => [key.keyId, new Set(key.limits.filter((l) => l.burst === true).map(windowIdOf))]));
      next.set(pool.poolId, { keyIds, keyIdSet: new Set(keyIds), quotaResets, burstWindows });
    }
    const applied = this.applying.then(async () => {
      // Store first: until the index swaps, requests name only old keys, and the
      // store skips any it no longer has.
      await this.store.configure(specs);
      this.pools = next;
    });
    this.applying = applied.catch(() => undefined);
    return applied;
  }

  async acquire(request: AcquireRequest, nowMs: number): Promise<AcquireResult> {
    // Asked alone, a pool this limiter does not know is the caller's mistake (NOT_FOUND).
    this.requirePool(request.poolId);
    const [result] = await this.acquireBatch([request], nowMs);
    return result!;
  }

  /**
   * Decides many requests in one store call, in order, each exactly as acquire
   * would. A request for a pool this limiter does not know yet is denied on its
   * own (see NOT_YET_KNOWN_RETRY_MS); the others are decided as usual.
   */
  async acquireBatch(requests: readonly AcquireRequest[], nowMs: number): Promise<AcquireResult[]> {
    const candidates: KeyCandidates[] = [];
    const known: number[] = [];
    for (let i = 0; i < requests.length; i++) {
      const request = requests[i]!;
      const pool = this.pools.get(request.poolId);
      if (pool === undefined) continue;
      const excluded = request.excludedKeyIds;
      known.push(i);
      candidates.push({
        poolId: request.poolId,
        tokens: tokensOf(request.estimatedTokens),
        high: request.high === true,
        keyIds:
          excluded === undefined || excluded.length === 0
            ? pool.keyIds
            : pool.keyIds.filter((keyId) => !excluded.includes(keyId)),
      });
    }
    const decisions = candidates.length === 0 ? [] : await this.store.acquire(candidates, nowMs, this.holdTtlMs);
    const results: AcquireResult[] = requests.map(() => NOT_YET_KNOWN);
    known.forEach((i, k) => (results[i] = toAcquireResult(decisions[k]!)));
    return results;
  }

  /** Frees holds at once (see LimiterStore.release); holds of pools a config swap removed are dropped. */
  async release(holds: readonly HoldRef[], nowMs: number): Promise<void> {
    const known = holds.filter((h) => this.pools.has(h.poolId));
    if (known.length > 0) await this.store.release(known, nowMs);
  }

  /** Extends holds still in flight by holdTtlMs from now; per hold, whether it was still held. */
  async renew(holds: readonly HoldRef[], nowMs: number): Promise<boolean[]> {
    if (holds.length === 0) return [];
    return this.store.renew(holds, nowMs, this.holdTtlMs);
  }

  /**
   * Leases slices of the pools' capacity (see LimiterStore.lease); a pool not
   * known yet is denied briefly, as in acquireBatch. `returns` are applied
   * first; those for pools or keys no longer configured free nothing.
   */
  async grantLeases(requests: readonly LeaseRequest[], nowMs: number, holdMs: number, returns: readonly LeaseReturn[] = []): Promise<LeaseResult[]> {
    const candidates: LeaseCandidates[] = [];
    const known: number[] = [];
    requests.forEach((request, i) => {
      const pool = this.pools.get(request.poolId);
      if (pool === undefined) return;
      const excluded = request.excludedKeyIds;
      known.push(i);
      candidates.push({
        poolId: request.poolId,
        wantedSlots: request.wantedSlots,
        wantedTokens: tokensOf(request.wantedTokens),
        high: request.high === true,
        keyIds: excluded === undefined || excluded.length === 0 ? pool.keyIds : pool.keyIds.filter((keyId) => !excluded.includes(keyId)),
      });
    });
    const knownReturns = returns.filter((r) => this.pools.get(r.poolId)?.keyIdSet.has(r.keyId) === true);
    const decisions = candidates.length === 0 && knownReturns.length === 0 ? [] : await this.store.lease(candidates, nowMs, holdMs, knownReturns);
    const results: LeaseResult[] = requests.map(() => ({ grants: [], retryAfterMs: NOT_YET_KNOWN_RETRY_MS, reason: 'KEY_POOL_EXHAUSTED' }));
    known.forEach((i, k) => {
      const decision = decisions[k]!;
      results[i] =
        decision.grants.length > 0
          ? { grants: decision.grants, retryAfterMs: undefined, reason: undefined }
          : {
              grants: [],
              retryAfterMs: decision.retryAfterMs,
              reason: decision.retryAfterMs === undefined ? 'KEY_POOL_UNAVAILABLE' : 'KEY_POOL_EXHAUSTED',
            };
    });
    return results;
  }

  /**
   * Corrects reservations to the provider's reported usage (see
   * LimiterStore.settle). Settlements for pools or keys a config swap removed
   * are dropped: their windows are gone with them.
   */
  async settle(settlements: readonly Settlement[], nowMs: number): Promise<void> {
    const known = settlements.filter((s) => this.pools.get(s.poolId)?.keyIdSet.has(s.keyId) === true && s.admissionId !== '');
    if (known.length === 0) return;
    await this.store.settle(
      known.map((s) => ({ ...s, reservedTokens: tokensOf(s.reservedTokens), usedTokens: tokensOf(s.usedTokens) })),
      nowMs,
    );
  }

  /**
   * Learns the key's limit and remaining count from the provider's headers
   * (see LimiterStore.learn), then: 429 cools the key until now + retry-after
   * (DEFAULT_COOLING_MS without one); 401/403 parks it; any other status
   * changes nothing more. Returns the key's
   * resulting condition.
   */
  async reportOutcome(outcome: KeyOutcome, nowMs: number): Promise<KeyConditionState> {
    const key = this.requireKey(outcome.poolId, outcome.keyId);
    const reason = outcome.httpStatus === 429 ? 'provider answered 429' : outcome.httpStatus < 300 ? 'provider reported no capacity left' : `provider answered ${outcome.httpStatus}`;
    let state: KeyConditionState | undefined;
    // Learn first: a cooled key comes back with its limit known, so it is not flooded.
    if (outcome.learnedLimit !== undefined || outcome.remainingRequests !== undefined) {
      state = await this.store.learn(key, { limit: validLimit(outcome.learnedLimit), remainingRequests: outcome.remainingRequests }, nowMs);
      if (state === undefined) return this.keyGone(key);
    }
    if (outcome.quotaExhausted === true) {
      // Seconds won't bring a spent quota back: the key rests until its period starts again.
      state = await this.store.cool(key, nextQuotaResetMs(nowMs, this.requirePool(key.poolId).quotaResets), QUOTA_EXHAUSTED_REASON, nowMs);
    } else if (outcome.httpStatus === 429 || (outcome.httpStatus < 300 && outcome.retryAfterMs !== undefined)) {
      state = await this.store.cool(key, nowMs + coolingMs(outcome.retryAfterMs), reason, nowMs);
    } else if (outcome.httpStatus === 401 || outcome.httpStatus === 403) {
      state = await this.store.park(key, reason, nowMs);
    } else {
      state = await this.store.condition(key, nowMs);
    }
    return state ?? this.keyGone(key);
  }

  /** An operator's word that a parked key is good again (e.g. after a rotation). */
  async unparkKey(poolId: string, keyId: string, nowMs: number): Promise<KeyConditionState> {
    const key = this.requireKey(poolId, keyId);
    return (await this.store.unpark(key, nowMs)) ?? this.keyGone(key);
  }

  /** Every key of one pool (or of all pools), in config order; windows derived from a burst say so. */
  async keyStates(query: { readonly poolId?: string }, nowMs: number): Promise<KeyState[]> {
    if (query.poolId !== undefined) this.requirePool(query.poolId);
    const states = await this.store.snapshot(query.poolId, nowMs);
    return states.map((state) => {
      const bursts = this.pools.get(state.poolId)?.burstWindows.get(state.keyId);
      if (bursts === undefined || bursts.size === 0) return state;
      return { ...state, windows: state.windows.map((w) => (bursts.has(windowIdOf(w)) ? { ...w, burst: true } : w)) };
    });
  }

  private requirePool(poolId: string): PoolIndex {
    const pool = this.pools.get(poolId);
    if (pool === undefined) throw new UnknownPoolError(poolId);
    return pool;
  }

  private requireKey(poolId: string, keyId: string): KeyRef {
    if (!this.requirePool(poolId).keyIdSet.has(keyId)) throw new UnknownKeyError(poolId, keyId);
    return { poolId, keyId };
  }

  /** The key was removed by a config swap that landed while we waited on the store. */
  private keyGone(key: KeyRef): never {
    throw new UnknownKeyError(key.poolId, key.keyId);
  }
}

function windowIdOf(window: { readonly requests: number; readonly perMs: number }): string {
  return `${String(window.requests)}:${String(window.perMs)}`;
}

/** Whole, non-negative token counts: what the wire may carry as anything else is a caller's bug, not a weight. */
function tokensOf(tokens: number | undefined): number {
  return tokens !== undefined && Number.isFinite(tokens) && tokens > 0 ? Math.ceil(tokens) : 0;
}

/** A limit the provider stated that the store can hold; anything else is ignored, not trusted. */
function validLimit(limit: WindowLimit | undefined): WindowLimit | undefined {
  if (limit === undefined) return undefined;
  const ok = Number.isInteger(limit.requests) && limit.requests >= 1 && limit.requests <= MAX_WINDOW_REQUESTS && Number.isFinite(limit.perMs) && limit.perMs > 0;
  return ok ? limit : undefined;
}

function coolingMs(retryAfterMs: number | undefined): number {
  return retryAfterMs !== undefined && Number.isFinite(retryAfterMs) && retryAfterMs >= 0
    ? retryAfterMs
    : DEFAULT_COOLING_MS;
}

function toAcquireResult(decision: AcquireDecision): AcquireResult {
  if (decision.granted) return decision;
  return decision.retryAfterMs === undefined
    ? { granted: false, retryAfterMs: undefined, reason: 'KEY_POOL_UNAVAILABLE' }
    : { granted: false, retryAfterMs: decision.retryAfterMs, reason: 'KEY_POOL_EXHAUSTED' };
}
