import { DEFAULT_KEY_SELECTION, reservedOf } from '../domain/key-choice';
import type { CalendarQuota, HoldRef, KeyConditionState, KeySelection, KeySpec, KeyState, LeaseGrant, LeaseReturn, PoolSpec, Settlement, TokenWindowLimit, WindowLimit } from '../domain/types';
import { HoldSet } from './hold-set';
import { LEASE_RETURN_GRACE_MS, LeaseLedger } from './lease-ledger';
import { admissionIdOf, parseAdmissionId, QuotaCounter } from './quota-counter';
import { SlidingLog } from './sliding-log';
import { TokenLog } from './token-log';
import { DEFAULT_HOLD_TTL_MS, type AcquireDecision, type KeyCandidates, type KeyRef, type LeaseCandidates, type LeaseDecision, type LimiterStore, type ObservedLimits } from './store';

/** A lease slice takes at most this share of a key's headroom, so other routers still find some. */
const LEASE_SHARE_OF_HEADROOM = 4;

interface KeyRecord {
  readonly poolId: string;
  readonly keyId: string;
  readonly limits: readonly WindowLimit[];
  readonly windows: readonly SlidingLog[];
  readonly tokenLimits: readonly TokenWindowLimit[];
  /** undefined when the key has no token windows. */
  readonly tokenLog: TokenLog | undefined;
  readonly quotas: readonly QuotaCounter[];
  /** Token windows or token quotas: admissions carry a weight and an admission id. */
  readonly carriesTokens: boolean;
  readonly hasTokenQuota: boolean;
  /** Set on a key with a concurrency cap. */
  readonly holds: HoldSet | undefined;
  /** Set while parked; parking outranks cooling. */
  parkedReason: string | undefined;
  coolingUntilMs: number;
  coolingReason: string;
  /** Store-wide grant counter at the last grant (0 = never): ties go to the lowest. */
  lastGrantSeq: number;
  /** Newest recorded admission; later admissions are clamped to it so logs stay sorted. */
  lastAdmittedMs: number;
  /** Weighted pools: the key's weight, and its running weight in the smooth weighted round robin. */
  weight: number;
  smoothWeight: number;
  /** Cheapest pools: the key's cost. */
  cost: number;
  /** Per window (and per token window), what only high-priority requests may use. */
  reserved: readonly number[];
  reservedTokens: readonly number[];
}

interface PoolChoice {
  readonly selection: KeySelection;
  readonly reserveShare: number;
}

const HEADROOM_ONLY: PoolChoice = Object.freeze({ selection: DEFAULT_KEY_SELECTION, reserveShare: 0 });

type Pools = ReadonlyMap<string, Map<string, KeyRecord>>;

const READY: KeyConditionState = Object.freeze({
  condition: 'READY',
  conditionReason: '',
  coolingUntilMs: undefined,
});

/**
 * The embedded store: one process, state in memory. Each method runs to
 * completion synchronously, so each is atomic with respect to the others.
 */
export class MemoryLimiterStore implements LimiterStore {
  private pools: Pools = new Map();
  private grantSeq = 0;
  /** Limits learned from the provider for keys declared without any, by learnedId. */
  private learned = new Map<string, WindowLimit>();
  private choices: ReadonlyMap<string, PoolChoice> = new Map();
  private readonly leases = new LeaseLedger();

  async configure(pools: readonly PoolSpec[]): Promise<void> {
    const next = new Map<string, Map<string, KeyRecord>>();
    const learned = new Map<string, WindowLimit>();
    const choices = new Map<string, PoolChoice>();
    for (const pool of pools) {
      const previous = this.pools.get(pool.poolId);
      const keys = new Map<string, KeyRecord>();
      const choice: PoolChoice = { selection: pool.keySelection ?? DEFAULT_KEY_SELECTION, reserveShare: pool.reserveForHigh ?? 0 };
      choices.set(pool.poolId, choice);
      for (let spec of pool.keys) {
        const limit = spec.limits.length === 0 ? this.learned.get(learnedId(pool.poolId, spec.keyId)) : undefined;
        if (limit !== undefined) {
          learned.set(learnedId(pool.poolId, spec.keyId), limit);
          spec = { ...spec, limits: [limit] };
        }
        const record = reconfigure(pool.poolId, spec, previous?.get(spec.keyId));
        record.weight = spec.weight ?? 1;
        record.cost = spec.cost ?? 0;
        reserveFor(record, choice.reserveShare);
        keys.set(spec.keyId, record);
      }
      next.set(pool.poolId, keys);
    }
    // One reference swap: no acquire ever sees half a config.
    this.pools = next;
    this.learned = learned;
    this.choices = choices;
  }

  private choiceOf(poolId: string): PoolChoice {
    return this.choices.get(poolId) ?? HEADROOM_ONLY;
  }

  async learn(ref: KeyRef, observed: ObservedLimits, nowMs: number): Promise<KeyConditionState | undefined> {
    let key = this.find(ref);
    if (key === undefined) return undefined;
    const id = learnedId(ref.poolId, ref.keyId);
    const previous = this.learned.get(id);
    if (observed.limit !== undefined && (key.limits.length === 0 || previous !== undefined)) {
      const limit = mergeLearned(previous, observed.limit);
      if (previous === undefined || limit.perMs !== previous.perMs || limit.requests !== previous.requests) {
        this.learned.set(id, limit);
        // Only the request window is learned: token windows, quotas and a concurrency cap stay as declared, with what they counted.
        key = reconfigure(
          ref.poolId,
          {
            keyId: ref.keyId,
            limits: [limit],
            tokenLimits: key.tokenLimits,
            quotas: key.quotas.map((counter) => counter.quota),
            ...(key.holds === undefined ? {} : { concurrency: key.holds.cap }),
          },
          key,
        );
        reserveFor(key, this.choiceOf(ref.poolId).reserveShare);
        this.pools.get(ref.poolId)!.set(ref.keyId, key);
      }
    }
    if (observed.remainingRequests !== undefined) {
      const unseen = roomBeyond(key, observed.limit?.requests, observed.remainingRequests, nowMs);
      if (unseen > 0) {
        const admittedMs = Math.max(nowMs, key.lastAdmittedMs);
        for (const window of key.windows) for (let s = 0; s < Math.min(unseen, window.requests); s++) window.record(admittedMs);
        key.lastAdmittedMs = admittedMs;
        key.lastGrantSeq = ++this.grantSeq;
        this.leases.corrected(ref.poolId, ref.keyId, key.lastGrantSeq);
      }
    }
    return conditionOf(key, nowMs);
  }

  async acquire(requests: readonly KeyCandidates[], nowMs: number, holdTtlMs = DEFAULT_HOLD_TTL_MS): Promise<AcquireDecision[]> {
    const decisions: AcquireDecision[] = new Array(requests.length);
    for (let i = 0; i < requests.length; i++) decisions[i] = this.acquireOne(requests[i], nowMs, holdTtlMs);
    return decisions;
  }

  async release(holds: readonly HoldRef[], _nowMs: number): Promise<void> {
    for (const hold of holds) this.find(hold)?.holds?.release(hold.holdId);
  }

  async renew(holds: readonly HoldRef[], nowMs: number, holdTtlMs: number): Promise<boolean[]> {
    return holds.map((hold) => this.find(hold)?.holds?.renew(hold.holdId, nowMs, nowMs + holdTtlMs) ?? false);
  }

  private acquireOne(request: KeyCandidates, nowMs: number, holdTtlMs: number): AcquireDecision {
    const keys = this.pools.get(request.poolId);
    const { selection } = this.choiceOf(request.poolId);
    const high = request.high === true;
    let best: KeyRecord | undefined;
    let bestHeadroom = 0;
    let earliestWaitMs = Number.POSITIVE_INFINITY;
    const eligible: { key: KeyRecord }[] = [];
    if (keys !== undefined) {
      for (const keyId of request.keyIds) {
        const key = keys.get(keyId);
        if (key === undefined) continue;
        const room = roomOf(key, nowMs, request.tokens ?? 0, nowMs, high);
        if (room === undefined) continue;
        if (room.waitMs > 0) {
          earliestWaitMs = Math.min(earliestWaitMs, room.waitMs);
          continue;
        }
        if (selection === 'weighted') {
          eligible.push({ key });
          continue;
        }
        const headroom = room.headroom;
        if (
          best === undefined ||
          (selection === 'cheapest' && key.cost < best.cost) ||
          ((selection !== 'cheapest' || key.cost === best.cost) &&
            (headroom > bestHeadroom || (headroom === bestHeadroom && key.lastGrantSeq < best.lastGrantSeq)))
        ) {
          best = key;
          bestHeadroom = headroom;
        }
      }
    }
    if (selection === 'weighted') best = nextByWeight(eligible)?.key;
    if (best === undefined) {
      return {
        granted: false,
        retryAfterMs: earliestWaitMs === Number.POSITIVE_INFINITY ? undefined : earliestWaitMs,
      };
    }
    // A clock that steps back must not unsort the logs; recording the later time
    // only keeps an admission in its windows a little longer (stricter, never looser).
    const admittedMs = Math.max(nowMs, best.lastAdmittedMs);
    for (const window of best.windows) window.record(admittedMs);
    best.lastAdmittedMs = admittedMs;
    best.lastGrantSeq = ++this.grantSeq;
    recordQuotas(best, nowMs, nowMs, 1, request.tokens ?? 0);
    const holdId = takeHold(best, nowMs, holdTtlMs);
    let admissionId = '';
    if (best.carriesTokens) {
      best.tokenLog?.record(nowMs, admittedMs, request.tokens ?? 0, best.lastGrantSeq);
      admissionId = admissionIdOf(best.lastGrantSeq, best.hasTokenQuota ? nowMs : undefined);
    }
    return { granted: true, keyId: best.keyId, admissionId, ...(holdId === undefined ? {} : { holdId }) };
  }

  async settle(settlements: readonly Settlement[], nowMs: number): Promise<void> {
    for (const settlement of settlements) {
      const key = this.find(settlement);
      if (key === undefined || !key.carriesTokens) continue;
      const deltaTokens = settlement.usedTokens - settlement.reservedTokens;
      const { seq, stampMs } = parseAdmissionId(settlement.admissionId);
      if (deltaTokens < 0) {
        key.tokenLog?.refund(seq, -deltaTokens);
        // Refunds trust reservedTokens, as the token log does; a period already over is left as it was.
        if (stampMs !== undefined) for (const counter of key.quotas) if (counter.quota.unit === 'tokens') counter.refund(stampMs, -deltaTokens);
      } else if (deltaTokens > 0) {
        const admittedMs = Math.max(nowMs, key.lastAdmittedMs);
        key.tokenLog?.record(nowMs, admittedMs, deltaTokens, ++this.grantSeq);
        key.lastAdmittedMs = admittedMs;
        recordQuotas(key, nowMs, nowMs, 0, deltaTokens);
      }
    }
  }

  async lease(requests: readonly LeaseCandidates[], nowMs: number, holdMs: number, returns: readonly LeaseReturn[] = []): Promise<LeaseDecision[]> {
    this.returnLeases(returns, nowMs);
    const decisions: LeaseDecision[] = new Array(requests.length);
    for (let i = 0; i < requests.length; i++) decisions[i] = this.leaseOne(requests[i], nowMs, holdMs);
    return decisions;
  }

  private leaseOne(request: LeaseCandidates, nowMs: number, holdMs: number): LeaseDecision {
    const keys = this.pools.get(request.poolId);
    const wantedTokens = request.wantedTokens ?? 0;
    const high = request.high === true;
    const { selection } = this.choiceOf(request.poolId);
    const eligible: LeaseEligible[] = [];
    let earliestWaitMs = Number.POSITIVE_INFINITY;
    if (keys !== undefined) {
      for (const keyId of request.keyIds) {
        const key = keys.get(keyId);
        if (key === undefined) continue;
        // Slots without a token budget would spend tokens no window counts.
        if (key.carriesTokens && wantedTokens <= 0) continue;
        if (key.holds !== undefined) continue; // see LimiterStore.release: capped keys are never leased
        const room = roomOf(key, nowMs, key.carriesTokens ? 1 : 0, nowMs + holdMs, high);
        if (room === undefined) continue;
        if (room.waitMs > 0) earliestWaitMs = Math.min(earliestWaitMs, room.waitMs);
        else eligible.push({ key, headroom: room.headroom, available: room.available, tokensAvailable: tokensAvailableOf(key, nowMs, nowMs + holdMs, high) });
      }
    }
    if (eligible.length === 0) {
      return { grants: [], retryAfterMs: earliestWaitMs === Number.POSITIVE_INFINITY ? undefined : earliestWaitMs };
    }
    const wantedSlots = Math.max(1, request.wantedSlots);
    const plan = planLease(eligible, wantedSlots, selection);
    let unassignedTokens = wantedTokens;
    const tokensPerSlot = Math.ceil(wantedTokens / wantedSlots);
    const stampMs = nowMs + holdMs;
    const grants: LeaseGrant[] = [];
    for (let i = 0; i < plan.length; i++) {
      const { key, tokensAvailable } = plan[i]!.entry;
      const slots = plan[i]!.slots;
      // As before key selection policies: the headroom split shares tokens over every eligible key left.
      const keysLeft = (selection === 'headroom' ? eligible.length : plan.length) - i;
      const admittedMs = Math.max(stampMs, key.lastAdmittedMs);
      for (const window of key.windows) for (let s = 0; s < slots; s++) window.record(admittedMs);
      key.lastAdmittedMs = admittedMs;
      key.lastGrantSeq = ++this.grantSeq;
      if (!key.carriesTokens) {
        recordQuotas(key, nowMs, stampMs, slots, 0);
        grants.push({ keyId: key.keyId, slots, leaseId: this.keepLease(key, nowMs, stampMs, admittedMs, slots, 0) });
        continue;
      }
      const tokens = leaseTokens(unassignedTokens, keysLeft, tokensPerSlot, tokensAvailable);
      unassignedTokens = Math.max(0, unassignedTokens - tokens);
      key.tokenLog?.record(nowMs, admittedMs, tokens, key.lastGrantSeq);
      recordQuotas(key, nowMs, stampMs, slots, tokens);
      grants.push({ keyId: key.keyId, slots, leaseId: this.keepLease(key, nowMs, stampMs, admittedMs, slots, tokens), tokens, admissionId: admissionIdOf(key.lastGrantSeq, key.hasTokenQuota ? stampMs : undefined) });
    }
    return { grants, retryAfterMs: undefined };
  }

  /** Records what a lease just granted on `key` counted; its id is the grant's seq. */
  private keepLease(key: KeyRecord, nowMs: number, stampMs: number, admittedMs: number, slots: number, tokens: number): string {
    const leaseId = String(key.lastGrantSeq);
    let keptUntilMs = Number.NEGATIVE_INFINITY;
    for (const window of key.windows) keptUntilMs = Math.max(keptUntilMs, admittedMs + window.perMs);
    for (const limit of key.tokenLimits) keptUntilMs = Math.max(keptUntilMs, admittedMs + limit.perMs);
    for (const counter of key.quotas) keptUntilMs = Math.max(keptUntilMs, counter.periodAt(stampMs).endMs);
    keptUntilMs = Math.min(keptUntilMs, stampMs + LEASE_RETURN_GRACE_MS);
    if (keptUntilMs > nowMs) {
      const record = { windows: key.windows, grantMs: nowMs, stampMs, admittedMs, slots, tokens, seq: key.lastGrantSeq, keptUntilMs };
      this.leases.keep(key.poolId, key.keyId, leaseId, record, nowMs);
    }
    return leaseId;
  }

  /** See LimiterStore.lease: each return frees at most what its lease recorded, once. */
  private returnLeases(returns: readonly LeaseReturn[], nowMs: number): void {
    for (const given of returns) {
      const key = this.find(given);
      const lease = key && this.leases.take(given.poolId, given.keyId, given.leaseId, nowMs);
      if (key === undefined || lease === undefined) continue;
      const slots = Math.min(Math.max(0, Math.floor(given.slots)), lease.slots);
      const tokens = Math.min(Math.max(0, Math.floor(given.tokens)), lease.tokens);
      if (key.windows === lease.windows && this.leases.windowsReturnable(given.poolId, given.keyId, lease)) {
        for (const window of key.windows) if (lease.admittedMs > nowMs - window.perMs) window.forget(lease.admittedMs, slots);
      }
      if (tokens > 0) key.tokenLog?.refund(lease.seq, tokens);
      returnQuotas(key, lease.grantMs, lease.stampMs, slots, tokens);
    }
  }

  async cool(ref: KeyRef, untilMs: number, reason: string, nowMs: number): Promise<KeyConditionState | undefined> {
    const key = this.find(ref);
    if (key === undefined) return undefined;
    // Replies to requests sent before the first 429 may arrive later with a
    // shorter retry-after; they must not end the cooling early.
    if (untilMs > key.coolingUntilMs) {
      key.coolingUntilMs = untilMs;
      key.coolingReason = reason;
    }
    return conditionOf(key, nowMs);
  }

  async park(ref: KeyRef, reason: string, nowMs: number): Promise<KeyConditionState | undefined> {
    const key = this.find(ref);
    if (key === undefined) return undefined;
    key.parkedReason = reason;
    return conditionOf(key, nowMs);
  }

  async unpark(ref: KeyRef, nowMs: number): Promise<KeyConditionState | undefined> {
    const key = this.find(ref);
    if (key === undefined) return undefined;
    key.parkedReason = undefined;
    return conditionOf(key, nowMs);
  }

  async condition(ref: KeyRef, nowMs: number): Promise<KeyConditionState | undefined> {
    const key = this.find(ref);
    return key === undefined ? undefined : conditionOf(key, nowMs);
  }

  async snapshot(poolId: string | undefined, nowMs: number): Promise<KeyState[]> {
    const states: KeyState[] = [];
    for (const [id, keys] of this.pools) {
      if (poolId !== undefined && id !== poolId) continue;
      for (const key of keys.values()) states.push(stateOf(key, nowMs));
    }
    return states;
  }

  async close(): Promise<void> {
    this.pools = new Map();
  }

  private find(ref: KeyRef): KeyRecord | undefined {
    return this.pools.get(ref.poolId)?.get(ref.keyId);
  }
}

/**
 * Unchanged limits: the very same record (log, condition, rotation place).
 * Changed limits: new logs seeded from the old log with the most slots, so a
 * limit change doesn't hand out a fresh burst the provider would 429; the
 * seed holds at most the old max(requests) admissions, so a window that grew
 * past that only knows that much history. Conditions always carry over: a
 * limit change doesn't make a revoked key valid.
 */
function reconfigure(poolId: string, spec: KeySpec, previous: KeyRecord | undefined): KeyRecord {
  const tokenLimits = spec.tokenLimits ?? [];
  const quotaSpecs = spec.quotas ?? [];
  if (
    previous !== undefined &&
    sameLimits(previous.limits, spec.limits) &&
    sameTokenLimits(previous.tokenLimits, tokenLimits) &&
    sameQuotas(previous.quotas.map((c) => c.quota), quotaSpecs) &&
    previous.holds?.cap === spec.concurrency
  ) {
    return previous;
  }
  const quotas = quotaSpecs.map((quota) => new QuotaCounter({ ...quota }));
  const hasTokenQuota = quotas.some((c) => c.quota.unit === 'tokens');
  const windows = spec.limits.map((limit) => new SlidingLog(limit.requests, limit.perMs));
  const tokenLog = tokenLimits.length === 0 ? undefined : new TokenLog(tokenLimits.map((l) => ({ tokens: l.tokens, perMs: l.perMs })));
  const record: KeyRecord = {
    poolId,
    keyId: spec.keyId,
    limits: spec.limits.map((limit) => ({ requests: limit.requests, perMs: limit.perMs })),
    windows,
    tokenLimits: tokenLog?.limits ?? [],
    tokenLog,
    quotas,
    carriesTokens: tokenLog !== undefined || hasTokenQuota,
    hasTokenQuota,
    holds: spec.concurrency === undefined ? undefined : new HoldSet(spec.concurrency),
    parkedReason: undefined,
    coolingUntilMs: Number.NEGATIVE_INFINITY,
    coolingReason: '',
    lastGrantSeq: 0,
    lastAdmittedMs: Number.NEGATIVE_INFINITY,
    weight: previous?.weight ?? 1,
    smoothWeight: previous?.smoothWeight ?? 0,
    cost: previous?.cost ?? 0,
    reserved: [],
    reservedTokens: [],
  };
  if (previous === undefined) return record;
  // Requests in flight stay counted under a new cap.
  if (record.holds !== undefined) previous.holds?.copyTo(record.holds);
  let longest: SlidingLog | undefined;
  for (const window of previous.windows) {
    if (longest === undefined || window.requests > longest.requests) longest = window;
  }
  if (longest !== undefined) for (const window of windows) window.seedFrom(longest);
  if (tokenLog !== undefined && previous.tokenLog !== undefined) tokenLog.seedFrom(previous.tokenLog);
  // What was spent this period stays spent when only the limit changed.
  for (const counter of quotas) {
    const same = previous.quotas.find((c) => sameCalendar(c.quota, counter.quota));
    if (same !== undefined) counter.seedFrom(same);
  }
  record.parkedReason = previous.parkedReason;
  record.coolingUntilMs = previous.coolingUntilMs;
  record.coolingReason = previous.coolingReason;
  record.lastGrantSeq = previous.lastGrantSeq;
  record.lastAdmittedMs = previous.lastAdmittedMs;
  return record;
}

function sameTokenLimits(a: readonly TokenWindowLimit[], b: readonly TokenWindowLimit[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i].tokens !== b[i].tokens || a[i].perMs !== b[i].perMs) return false;
  }
  return true;
}

function learnedId(poolId: string, keyId: string): string {
  return `${poolId}\u0000${keyId}`;
}

/** Same request count: the longest window seen (a reset is never longer than its window). */
function mergeLearned(previous: WindowLimit | undefined, observed: WindowLimit): WindowLimit {
  if (previous === undefined || previous.requests !== observed.requests) return { requests: observed.requests, perMs: observed.perMs };
  return { requests: observed.requests, perMs: Math.max(previous.perMs, observed.perMs) };
}

/**
 * How much more room this store sees than the provider said remains, in the
 * window the provider reported on (the one of `limitRequests`, else the tightest).
 */
function roomBeyond(key: KeyRecord, limitRequests: number | undefined, remainingRequests: number, nowMs: number): number {
  let ours = Number.POSITIVE_INFINITY;
  for (const window of key.windows) {
    const remaining = window.remaining(nowMs);
    if (window.requests === limitRequests) {
      ours = remaining;
      break;
    }
    ours = Math.min(ours, remaining);
  }
  return ours === Number.POSITIVE_INFINITY ? 0 : Math.max(0, ours - remainingRequests);
}

function sameCalendar(a: CalendarQuota, b: CalendarQuota): boolean {
  return a.unit === b.unit && a.period === b.period && a.timeZone === b.timeZone;
}

function sameQuotas(a: readonly CalendarQuota[], b: readonly CalendarQuota[]): boolean {
  return a.length === b.length && a.every((q, i) => sameCalendar(q, b[i]!) && q.limit === b[i]!.limit);
}

function sameLimits(a: readonly WindowLimit[], b: readonly WindowLimit[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i].requests !== b[i].requests || a[i].perMs !== b[i].perMs) return false;
  }
  return true;
}

/**
 * What a key can take at nowMs for a request of `tokens`: undefined when
 * parked or when its token limit is below `tokens` (it never could); else the
 * wait until it is admissible (its cooling and every full window), or, with
 * no wait, its headroom (min remaining/limit over its request and token
 * windows) and the admissions it has room for. A key with no windows has
 * infinite room.
 */
function roomOf(
  key: KeyRecord,
  nowMs: number,
  tokens: number,
  stampMs: number = nowMs,
  high = true,
): { waitMs: number; headroom: number; available: number } | undefined {
  if (key.parkedReason !== undefined) return undefined;
  const tokenLog = key.tokenLog;
  const reserved = high ? NONE_RESERVED : key.reserved;
  const reservedTokens = high ? NONE_RESERVED : key.reservedTokens;
  if (tokenLog !== undefined) for (let t = 0; t < key.tokenLimits.length; t++) if (tokens > key.tokenLimits[t]!.tokens - (reservedTokens[t] ?? 0)) return undefined;
  // A window wholly reserved is never this request's, whatever the wait.
  for (let w = 0; w < key.windows.length; w++) if (key.windows[w]!.requests - (reserved[w] ?? 0) < 1) return undefined;
  for (const counter of key.quotas) if (counter.quota.unit === 'tokens' && tokens > counter.quota.limit) return undefined;
  const holdRoom = key.holds?.room(nowMs) ?? NO_CAP;
  const coolingMs = key.coolingUntilMs - nowMs;
  if (coolingMs > 0) return { waitMs: Math.max(coolingMs, windowsWaitMs(key, nowMs, tokens, stampMs, high), holdRoom.waitMs), headroom: 0, available: 0 };
  let headroom = holdRoom.headroom;
  let available = Number.POSITIVE_INFINITY;
  let waitMs = holdRoom.waitMs;
  for (let w = 0; w < key.windows.length; w++) {
    const window = key.windows[w]!;
    const held = reserved[w] ?? 0;
    if (window.hasRoomUnder(nowMs, window.requests - held)) {
      const remaining = window.remaining(nowMs);
      headroom = Math.min(headroom, remaining / window.requests);
      available = Math.min(available, remaining - held);
    } else {
      waitMs = Math.max(waitMs, window.waitMsUnder(nowMs, window.requests - held));
    }
  }
  if (tokenLog !== undefined) {
    for (let t = 0; t < key.tokenLimits.length; t++) {
      const limit = key.tokenLimits[t]!;
      const tokenWaitMs = tokenLog.waitMs(unreservedLimit(limit, reservedTokens[t] ?? 0), nowMs, tokens);
      if (tokenWaitMs > 0) waitMs = Math.max(waitMs, tokenWaitMs);
      else headroom = Math.min(headroom, tokenLog.remaining(limit, nowMs) / limit.tokens);
    }
  }
  for (const counter of key.quotas) {
    const quotaWaitMs = quotaWaitMsOf(counter, nowMs, tokens, stampMs);
    if (quotaWaitMs > 0) {
      waitMs = Math.max(waitMs, quotaWaitMs);
      continue;
    }
    const remaining = Math.min(counter.remainingAt(nowMs), counter.remainingAt(stampMs));
    headroom = Math.min(headroom, remaining / counter.quota.limit);
    if (counter.quota.unit === 'requests') available = Math.min(available, remaining);
  }
  return { waitMs, headroom, available };
}

/**
 * 0 when the quota has room for one more request (or max(tokens, 1) tokens:
 * a spent token quota takes nothing, even unestimated) in the period of nowMs
 * and in that of stampMs (a lease's hold end, which may lie past midnight);
 * else until the full period ends.
 */
function quotaWaitMsOf(counter: QuotaCounter, nowMs: number, tokens: number, stampMs: number): number {
  const need = counter.quota.unit === 'requests' ? 1 : Math.max(1, tokens);
  if (counter.usedAt(nowMs) + need > counter.quota.limit) return counter.periodAt(nowMs).endMs - nowMs;
  if (counter.usedAt(stampMs) + need > counter.quota.limit) return counter.periodAt(stampMs).endMs - nowMs;
  return 0;
}

/**
 * Counts an admission (or a lease's slots and budget) in the period of
 * nowMs, and also in the next one when a lease's hold reaches into it: the
 * slots may be spent on either side of midnight.
 */
function recordQuotas(key: KeyRecord, nowMs: number, stampMs: number, slots: number, tokens: number): void {
  for (const counter of key.quotas) {
    const amount = counter.quota.unit === 'requests' ? slots : tokens;
    if (amount <= 0) continue;
    counter.add(nowMs, nowMs, amount);
    if (counter.periodAt(stampMs).startMs !== counter.periodAt(nowMs).startMs) counter.add(nowMs, stampMs, amount);
  }
}

/** Takes back from each quota what recordQuotas counted for a lease's unspent slots and budget. */
function returnQuotas(key: KeyRecord, grantMs: number, stampMs: number, slots: number, tokens: number): void {
  for (const counter of key.quotas) {
    const amount = counter.quota.unit === 'requests' ? slots : tokens;
    if (amount <= 0) continue;
    counter.refund(grantMs, amount);
    if (counter.periodAt(stampMs).startMs !== counter.periodAt(grantMs).startMs) counter.refund(stampMs, amount);
  }
}

/** The tokens a key's tightest token window (less its reserve, unless high) or token quota still takes (Infinity without either). */
function tokensAvailableOf(key: KeyRecord, nowMs: number, stampMs: number, high: boolean): number {
  let available = Number.POSITIVE_INFINITY;
  if (key.tokenLog !== undefined) {
    for (let t = 0; t < key.tokenLimits.length; t++) {
      const held = high ? 0 : (key.reservedTokens[t] ?? 0);
      available = Math.min(available, Math.max(0, key.tokenLog.remaining(key.tokenLimits[t]!, nowMs) - held));
    }
  }
  for (const counter of key.quotas) {
    if (counter.quota.unit === 'tokens') available = Math.min(available, counter.remainingAt(nowMs), counter.remainingAt(stampMs));
  }
  return available;
}

/**
 * A lease's token budget on one key: its share of the tokens still wanted,
 * capped at a quarter of its token headroom so other routers find some, but
 * at least one slot's worth when that fits (as a slice shrinks to one slot
 * near the limit), and never more than the headroom. At least 1: the key had
 * room for one token to be eligible.
 */
function leaseTokens(unassignedTokens: number, keysLeft: number, tokensPerSlot: number, tokensAvailable: number): number {
  const share = Math.ceil(unassignedTokens / keysLeft);
  const cap = Math.max(Math.floor(tokensAvailable / LEASE_SHARE_OF_HEADROOM), Math.min(tokensPerSlot, tokensAvailable));
  return Math.max(1, Math.min(share, cap, tokensAvailable));
}

function windowsWaitMs(key: KeyRecord, nowMs: number, tokens: number, stampMs: number, high: boolean): number {
  let waitMs = 0;
  for (const counter of key.quotas) waitMs = Math.max(waitMs, quotaWaitMsOf(counter, nowMs, tokens, stampMs));
  for (let w = 0; w < key.windows.length; w++) {
    const window = key.windows[w]!;
    waitMs = Math.max(waitMs, window.waitMsUnder(nowMs, window.requests - (high ? 0 : (key.reserved[w] ?? 0))));
  }
  if (key.tokenLog !== undefined) {
    for (let t = 0; t < key.tokenLimits.length; t++) {
      const limit = unreservedLimit(key.tokenLimits[t]!, high ? 0 : (key.reservedTokens[t] ?? 0));
      waitMs = Math.max(waitMs, key.tokenLog.waitMs(limit, nowMs, tokens));
    }
  }
  return waitMs;
}

/** A key without a concurrency cap: never waits for a hold, and holds don't limit its headroom. */
const NO_CAP = Object.freeze({ waitMs: 0, headroom: Number.POSITIVE_INFINITY });
const NONE_RESERVED: readonly number[] = Object.freeze([]);

/** A token window as a request outside the high-priority reserve sees it. */
function unreservedLimit(limit: TokenWindowLimit, reserved: number): TokenWindowLimit {
  return reserved === 0 ? limit : { tokens: limit.tokens - reserved, perMs: limit.perMs };
}

/** What only high-priority requests may use of each of the key's windows, from its pool's share. */
function reserveFor(key: KeyRecord, share: number): void {
  key.reserved = key.limits.map((limit) => reservedOf(limit.requests, share));
  key.reservedTokens = key.tokenLimits.map((limit) => reservedOf(limit.tokens, share));
}

/**
 * Smooth weighted round robin (nginx's): every key with room gains its
 * weight, the highest (first in candidate order on a tie) is granted and
 * gives back the weights gained in this round. Over any run of grants among
 * the same keys the counts follow the weights exactly (3:1 gives a, a, b, a).
 */
function nextByWeight<T extends { readonly key: KeyRecord }>(eligible: readonly T[], usable: (entry: T, index: number) => boolean = () => true): T | undefined {
  let best: T | undefined;
  let total = 0;
  for (let i = 0; i < eligible.length; i++) {
    const entry = eligible[i]!;
    if (!usable(entry, i)) continue;
    entry.key.smoothWeight += entry.key.weight;
    total += entry.key.weight;
    if (best === undefined || entry.key.smoothWeight > best.key.smoothWeight) best = entry;
  }
  if (best !== undefined) best.key.smoothWeight -= total;
  return best;
}

interface LeaseEligible {
  readonly key: KeyRecord;
  readonly headroom: number;
  /** Slots the key may still take (less the reserve for a non-high lease); Infinity without windows. */
  readonly available: number;
  readonly tokensAvailable: number;
}

/**
 * How many slots each eligible key gets, in the order they are carved; each
 * takes at most a quarter of its available slots (at least one). headroom:
 * least recently granted first, ceil(unassigned / keys left) each. weighted:
 * slot by slot by nextByWeight among the keys not yet at their cap.
 * cheapest: the cheapest first (ties by headroom, then least recently
 * granted), each filled to its cap.
 */
function planLease(eligible: LeaseEligible[], wantedSlots: number, selection: KeySelection): { entry: LeaseEligible; slots: number }[] {
  const capOf = (e: LeaseEligible, share: number): number =>
    e.available === Number.POSITIVE_INFINITY ? share : Math.max(1, Math.floor(e.available / LEASE_SHARE_OF_HEADROOM));
  const plan: { entry: LeaseEligible; slots: number }[] = [];
  let unassigned = wantedSlots;
  if (selection === 'weighted') {
    const caps = eligible.map((e) => capOf(e, wantedSlots));
    const slots = eligible.map(() => 0);
    const slotOf = new Map(eligible.map((entry, i) => [entry, i]));
    for (; unassigned > 0; unassigned--) {
      const entry = nextByWeight(eligible, (_, i) => slots[i]! < caps[i]!);
      if (entry === undefined) break;
      slots[slotOf.get(entry)!]!++;
    }
    eligible.forEach((entry, i) => {
      if (slots[i]! > 0) plan.push({ entry, slots: slots[i]! });
    });
    return plan;
  }
  if (selection === 'cheapest') {
    eligible.sort((x, y) => x.key.cost - y.key.cost || y.headroom - x.headroom || x.key.lastGrantSeq - y.key.lastGrantSeq);
  } else {
    // Least recently granted first, so small leases rotate over the keys.
    eligible.sort((x, y) => x.key.lastGrantSeq - y.key.lastGrantSeq);
  }
  for (let i = 0; i < eligible.length && unassigned > 0; i++) {
    // cheapest fills each key in turn; headroom spreads what is left over the keys left.
    const share = selection === 'cheapest' ? unassigned : Math.ceil(unassigned / (eligible.length - i));
    const slots = Math.min(share, capOf(eligible[i]!, share));
    unassigned -= slots;
    plan.push({ entry: eligible[i]!, slots });
  }
  return plan;
}

/** The hold an admission to a capped key takes (its id: the grant's number, unique in the store); undefined without a cap. */
function takeHold(key: KeyRecord, nowMs: number, holdTtlMs: number): string | undefined {
  if (key.holds === undefined) return undefined;
  const holdId = String(key.lastGrantSeq);
  key.holds.take(holdId, nowMs + holdTtlMs);
  return holdId;
}

function conditionOf(key: KeyRecord, nowMs: number): KeyConditionState {
  if (key.parkedReason !== undefined) {
    return { condition: 'PARKED', conditionReason: key.parkedReason, coolingUntilMs: undefined };
  }
  if (key.coolingUntilMs > nowMs) {
    return { condition: 'COOLING', conditionReason: key.coolingReason, coolingUntilMs: key.coolingUntilMs };
  }
  return READY;
}

function stateOf(key: KeyRecord, nowMs: number): KeyState {
  return {
    poolId: key.poolId,
    keyId: key.keyId,
    ...conditionOf(key, nowMs),
    windows: key.windows.map((window) => ({
      requests: window.requests,
      perMs: window.perMs,
      remaining: window.remaining(nowMs),
      resetInMs: window.resetInMs(nowMs),
    })),
    tokenWindows: key.tokenLimits.map((limit) => ({
      tokens: limit.tokens,
      perMs: limit.perMs,
      remaining: key.tokenLog?.remaining(limit, nowMs) ?? limit.tokens,
      resetInMs: key.tokenLog?.resetInMs(limit, nowMs) ?? 0,
    })),
    quotas: key.quotas.map((counter) => ({
      ...counter.quota,
      used: counter.usedAt(nowMs),
      resetAtMs: counter.periodAt(nowMs).endMs,
    })),
    ...(key.holds === undefined ? {} : { concurrency: { limit: key.holds.cap, inFlight: key.holds.inFlight(nowMs) } }),
  };
}
