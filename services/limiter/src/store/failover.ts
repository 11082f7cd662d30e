import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { HoldRef, KeyConditionState, KeyState, LeaseReturn, PoolSpec, Settlement } from '../domain/types';
import { MemoryLimiterStore } from './memory';
import type { AcquireDecision, KeyCandidates, KeyRef, ObservedLimits, LeaseCandidates, LeaseDecision, LimiterStore } from './store';

/**
 * What the limiter does while its shared store (Redis) does not answer:
 * - closed: deny everything with a retry-after; no key is ever over its limit,
 *   but callers see 429s until Redis is back;
 * - open: decide from a local store holding this replica's share of every
 *   limit (limit / replicas), so N replicas together still stay within it.
 */
export type FailureMode = { kind: 'closed' } | { kind: 'open'; replicas: number };

export interface FailoverOptions {
  mode: FailureMode;
  /** A shared-store call slower than this counts as a failure. */
  callTimeoutMs?: number;
  /** While degraded, how often a call tries the shared store again. */
  probeIntervalMs?: number;
  /** Told when the store degrades or recovers, for the log. */
  onChange?: (degraded: boolean, cause: unknown) => void;
}

const DENIAL_RETRY_MS = 1_000;
/** Marks the lease ids of the local store (the shared store's are digits). */
const LOCAL_LEASE = 'local-';

class SharedStoreDown extends Error {
  constructor(cause: unknown) {
    super('the shared limiter store did not answer', { cause });
  }
}

/** A LimiterStore that keeps deciding, by its failure mode, while the shared one is down. */
export class FailoverLimiterStore implements LimiterStore {
  private readonly local = new MemoryLimiterStore();
  private degradedSinceMs: number | undefined;
  private lastProbeMs = 0;
  private pools: readonly PoolSpec[] = [];
  private readonly callTimeoutMs: number;
  private readonly probeIntervalMs: number;

  constructor(
    private readonly shared: LimiterStore,
    private readonly options: FailoverOptions,
  ) {
    this.callTimeoutMs = options.callTimeoutMs ?? 250;
    this.probeIntervalMs = options.probeIntervalMs ?? 1_000;
  }

  get degraded(): boolean {
    return this.degradedSinceMs !== undefined;
  }

  async configure(pools: readonly PoolSpec[]): Promise<void> {
    this.pools = pools;
    await this.local.configure(this.options.mode.kind === 'open' ? shareOf(pools, this.options.mode.replicas) : pools);
    // A config that could not reach Redis is applied there on recovery.
    await this.viaShared(() => this.shared.configure(pools), () => undefined);
  }

  acquire(requests: readonly KeyCandidates[], nowMs: number, holdTtlMs?: number): Promise<AcquireDecision[]> {
    return this.viaShared(
      () => this.shared.acquire(requests, nowMs, holdTtlMs),
      () => (this.options.mode.kind === 'open' ? this.local.acquire(requests, nowMs, holdTtlMs).then(markLocalHolds) : requests.map(() => ({ granted: false as const, retryAfterMs: DENIAL_RETRY_MS }))),
    );
  }

  /**
   * The two stores number leases independently, so the local store's lease
   * ids carry LOCAL_LEASE: a return goes to the store that granted it, and
   * one naming a shared lease while Redis is away is dropped (its slots stay
   * counted until they leave the windows, as without returns).
   */
  async lease(requests: readonly LeaseCandidates[], nowMs: number, holdMs: number, returns: readonly LeaseReturn[] = []): Promise<LeaseDecision[]> {
    const local = returns.filter((r) => r.leaseId.startsWith(LOCAL_LEASE)).map((r) => ({ ...r, leaseId: r.leaseId.slice(LOCAL_LEASE.length) }));
    const shared = returns.filter((r) => !r.leaseId.startsWith(LOCAL_LEASE));
    if (local.length > 0 && this.options.mode.kind === 'open') await this.local.lease([], nowMs, holdMs, local);
    return this.viaShared(
      () => this.shared.lease(requests, nowMs, holdMs, shared),
      async () =>
        this.options.mode.kind === 'open'
          ? (await this.local.lease(requests, nowMs, holdMs)).map((d) => ({ ...d, grants: d.grants.map((g) => ({ ...g, leaseId: LOCAL_LEASE + g.leaseId })) }))
          : requests.map(() => ({ grants: [], retryAfterMs: DENIAL_RETRY_MS })),
    );
  }

  /**
   * While degraded, only excesses reach the local store: an admission id may
   * name a shared-store admission, and refunding the local entry that happens
   * to share it would free tokens that were really spent.
   */
  settle(settlements: readonly Settlement[], nowMs: number): Promise<void> {
    return this.viaShared(
      () => this.shared.settle(settlements, nowMs),
      () => (this.options.mode.kind === 'open' ? this.local.settle(settlements.filter((s) => s.usedTokens > s.reservedTokens), nowMs) : undefined),
    );
  }

  /** A hold goes back to the store that took it: the local fallback's ids carry LOCAL_HOLD. */
  async release(holds: readonly HoldRef[], nowMs: number): Promise<void> {
    const { local, shared } = splitHolds(holds);
    if (local.length > 0) await this.local.release(local, nowMs);
    if (shared.length > 0) await this.viaShared(() => this.shared.release(shared, nowMs), () => undefined);
  }

  async renew(holds: readonly HoldRef[], nowMs: number, holdTtlMs: number): Promise<boolean[]> {
    const { local, shared } = splitHolds(holds);
    const localRenewed = local.length > 0 ? await this.local.renew(local, nowMs, holdTtlMs) : [];
    // A shared store that can't answer still has its holds until their TTL; whether they are renewed is
    // unknown, not "expired" (which would make the router stop renewing a request still running): the
    // call fails, and the router asks again on its next tick.
    const sharedRenewed =
      shared.length > 0
        ? await this.viaShared(
            () => this.shared.renew(shared, nowMs, holdTtlMs),
            () => {
              throw new KeymeshError({ code: Code.Unavailable, reason: Reason.UNAVAILABLE, message: 'the shared limiter store cannot renew holds right now', retryAfterMs: this.probeIntervalMs });
            },
          )
        : [];
    let l = 0;
    let r = 0;
    return holds.map((hold) => (hold.holdId.startsWith(LOCAL_HOLD) ? localRenewed[l++]! : sharedRenewed[r++]!));
  }

  async learn(key: KeyRef, observed: ObservedLimits, nowMs: number): Promise<KeyConditionState | undefined> {
    // The local copy learns too, so a fallback during an outage knows the limit.
    const local = await this.local.learn(key, observed, nowMs);
    return this.viaShared(() => this.shared.learn(key, observed, nowMs), () => local);
  }

  async cool(key: KeyRef, untilMs: number, reason: string, nowMs: number): Promise<KeyConditionState | undefined> {
    const local = await this.local.cool(key, untilMs, reason, nowMs);
    return this.viaShared(() => this.shared.cool(key, untilMs, reason, nowMs), () => local);
  }

  async park(key: KeyRef, reason: string, nowMs: number): Promise<KeyConditionState | undefined> {
    const local = await this.local.park(key, reason, nowMs);
    return this.viaShared(() => this.shared.park(key, reason, nowMs), () => local);
  }

  async unpark(key: KeyRef, nowMs: number): Promise<KeyConditionState | undefined> {
    const local = await this.local.unpark(key, nowMs);
    return this.viaShared(() => this.shared.unpark(key, nowMs), () => local);
  }

  condition(key: KeyRef, nowMs: number): Promise<KeyConditionState | undefined> {
    return this.viaShared(() => this.shared.condition(key, nowMs), () => this.local.condition(key, nowMs));
  }

  snapshot(poolId: string | undefined, nowMs: number): Promise<KeyState[]> {
    return this.viaShared(() => this.shared.snapshot(poolId, nowMs), () => this.local.snapshot(poolId, nowMs));
  }

  async close(): Promise<void> {
    await Promise.all([this.shared.close(), this.local.close()]);
  }

  /**
   * Runs a call on the shared store, or the fallback when it is down. While
   * degraded, the shared store is tried again once per probe interval, not on
   * every call, so a dead Redis costs callers nothing but the fallback.
   */
  private async viaShared<T>(call: () => Promise<T>, fallback: () => T | Promise<T>): Promise<T> {
    const nowMs = Date.now();
    if (this.degradedSinceMs !== undefined && nowMs - this.lastProbeMs < this.probeIntervalMs) return fallback();
    this.lastProbeMs = nowMs;
    try {
      if (this.degradedSinceMs !== undefined) await this.recover();
      return await withTimeout(call(), this.callTimeoutMs);
    } catch (err) {
      if (!(err instanceof SharedStoreDown) && !isConnectionError(err)) throw err;
      if (this.degradedSinceMs === undefined) {
        this.degradedSinceMs = nowMs;
        this.options.onChange?.(true, err);
      }
      return fallback();
    }
  }

  /** Configs applied while Redis was away (or a Redis that restarted empty) must be there before it decides again. */
  private async recover(): Promise<void> {
    await withTimeout(this.shared.configure(this.pools), this.callTimeoutMs);
    this.degradedSinceMs = undefined;
    this.options.onChange?.(false, undefined);
  }
}

/** Marks the holds the local fallback took, so their release and renewal find it (its ids would clash with Redis's). */
const LOCAL_HOLD = 'local:';

function markLocalHolds(decisions: AcquireDecision[]): AcquireDecision[] {
  return decisions.map((d) => (d.granted && d.holdId !== undefined ? { ...d, holdId: `${LOCAL_HOLD}${d.holdId}` } : d));
}

function splitHolds(holds: readonly HoldRef[]): { local: HoldRef[]; shared: HoldRef[] } {
  const local: HoldRef[] = [];
  const shared: HoldRef[] = [];
  for (const hold of holds) {
    if (hold.holdId.startsWith(LOCAL_HOLD)) local.push({ ...hold, holdId: hold.holdId.slice(LOCAL_HOLD.length) });
    else shared.push(hold);
  }
  return { local, shared };
}

/** Each replica's share of every limit and quota, at least one request (or token) each. */
function shareOf(pools: readonly PoolSpec[], replicas: number): PoolSpec[] {
  const n = Math.max(1, Math.floor(replicas));
  // Everything but the limits (key selection, weights, costs, reserve, quota resets) holds as configured.
  return pools.map((pool) => ({
    ...pool,
    keys: pool.keys.map((key) => ({
      ...key,
      limits: key.limits.map((limit) => ({ requests: Math.max(1, Math.floor(limit.requests / n)), perMs: limit.perMs })),
      tokenLimits: (key.tokenLimits ?? []).map((limit) => ({ tokens: Math.max(1, Math.floor(limit.tokens / n)), perMs: limit.perMs })),
      // The fallback can't see what Redis counted this period, so an outage may
      // spend up to one more share per replica; a share, not the whole quota.
      quotas: (key.quotas ?? []).map((quota) => ({ ...quota, limit: Math.max(1, Math.floor(quota.limit / n)) })),
      ...(key.concurrency === undefined ? {} : { concurrency: Math.max(1, Math.floor(key.concurrency / n)) }),
    })),
  }));
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new SharedStoreDown(new Error(`no answer within ${ms} ms`))), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: string }).code;
  return (
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    code === 'EPIPE' ||
    code === 'ETIMEDOUT' ||
    err.name === 'MaxRetriesPerRequestError' ||
    /Stream isn't writeable|Connection is closed|enableOfflineQueue/i.test(err.message)
  );
}
