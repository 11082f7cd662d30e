import type { QuotaResets } from './quota-period';

/**
 * The limiter's vocabulary. Plain data only: these cross the store boundary
 * (and, for a Redis store, a Lua script's ARGV), so nothing here holds behaviour.
 */

/** At most `requests` admissions in any interval of length `perMs`. */
export interface WindowLimit {
  readonly requests: number;
  readonly perMs: number;
  /**
   * Set on a window derived from a declared limit's `burst` (at most B at
   * once, as B per perMs × B / N): enforced like any window, shown apart.
   */
  readonly burst?: boolean;
}

/**
 * At most `tokens` tokens over the admissions of any interval of length
 * `perMs`, each admission weighing what it reserved (its estimate) until a
 * settle corrects it to what the provider reported.
 */
export interface TokenWindowLimit {
  readonly tokens: number;
  readonly perMs: number;
}

export type QuotaPeriod = 'day' | 'month';
export type QuotaUnit = 'requests' | 'tokens';

/**
 * At most `limit` requests (or tokens, reserved and settled like a token
 * window's) admitted within each calendar day or month of `timeZone` (an
 * IANA name). Fixed periods, not sliding: the count starts again at the
 * zone's midnight, as providers' daily and monthly quotas do.
 */
export interface CalendarQuota {
  readonly unit: QuotaUnit;
  readonly limit: number;
  readonly period: QuotaPeriod;
  readonly timeZone: string;
}

export interface KeySpec {
  readonly keyId: string;
  /** Empty: the key is never limited by the limiter (the provider may still 429 it). */
  readonly limits: readonly WindowLimit[];
  /** Absent or empty: no token limit, and admissions carry no weight. */
  readonly tokenLimits?: readonly TokenWindowLimit[];
  /** Absent or empty: no calendar quota. */
  readonly quotas?: readonly CalendarQuota[];
  /** The key's share of grants in a `weighted` pool (> 0); ignored elsewhere. */
  readonly weight?: number;
  /** The key's price in a `cheapest` pool (>= 0, lower wins); ignored elsewhere. */
  readonly cost?: number;
  /**
   * At most this many requests in flight on the key at once, across every
   * replica, each holding the key until released or its hold expires.
   * Absent: no cap (and admissions take no hold).
   */
  readonly concurrency?: number;
}

/**
 * How a pool picks among its keys that have room:
 * headroom: the most headroom (min over windows and quotas of remaining/limit), ties to the least recently granted;
 * weighted: smooth weighted round robin over the keys with room, so grants follow the weights exactly;
 * cheapest: the lowest cost, ties by headroom, then the least recently granted.
 */
export type KeySelection = 'headroom' | 'weighted' | 'cheapest';

export interface PoolSpec {
  readonly poolId: string;
  readonly keys: readonly KeySpec[];
  /** When the provider's quota for the pool's keys starts afresh; DEFAULT_QUOTA_RESETS (monthly, UTC) when not given. */
  readonly quotaResets?: QuotaResets;
  /** 'headroom' when not given. */
  readonly keySelection?: KeySelection;
  /**
   * Share (0 to below 1) of each request and token window of every key that
   * only high-priority requests may use: any other request is admitted to a
   * key only while, after it, ceil(share × limit) stays free in each window.
   */
  readonly reserveForHigh?: number;
}

/**
 * READY: usable when its windows have room.
 * COOLING: the provider answered 429, or said the key's quota is spent
 * (insufficient_quota, until the pool's next quota period); usable again at coolingUntilMs.
 * PARKED: the provider answered 401/403; unusable until an operator unparks it
 * (or the key is removed from the config and added back).
 */
export type KeyCondition = 'READY' | 'COOLING' | 'PARKED';

export interface KeyConditionState {
  readonly condition: KeyCondition;
  /** Why the key is cooling or parked, e.g. "provider answered 429"; "" when READY. */
  readonly conditionReason: string;
  /** Set only while COOLING. */
  readonly coolingUntilMs: number | undefined;
}

export interface WindowState {
  readonly requests: number;
  readonly perMs: number;
  /** A window derived from a `burst`. */
  readonly burst?: boolean;
  /** Admissions the window would still take now. */
  readonly remaining: number;
  /**
   * Until the window is back to full capacity (its newest admission leaves it),
   * like a provider's x-ratelimit-reset-requests; 0 when nothing is in it.
   */
  readonly resetInMs: number;
}

export interface TokenWindowState {
  readonly tokens: number;
  readonly perMs: number;
  /** Tokens the window would still take now. */
  readonly remaining: number;
  /** Until the window's newest admission leaves it; 0 when nothing is in it. */
  readonly resetInMs: number;
}

export interface QuotaState extends CalendarQuota {
  /** Requests (or tokens) counted in the current period. */
  readonly used: number;
  /** When the current period ends and the count starts again. */
  readonly resetAtMs: number;
}

export interface KeyState extends KeyConditionState {
  readonly poolId: string;
  readonly keyId: string;
  readonly windows: readonly WindowState[];
  readonly tokenWindows: readonly TokenWindowState[];
  readonly quotas: readonly QuotaState[];
  /** Set on a key with a concurrency cap: the cap and the holds in flight now (expired ones not counted). */
  readonly concurrency?: ConcurrencyState;
}

export interface ConcurrencyState {
  readonly limit: number;
  readonly inFlight: number;
}

/** One request's hold on a key with a concurrency cap. */
export interface HoldRef {
  readonly poolId: string;
  readonly keyId: string;
  readonly holdId: string;
}

export interface AcquireRequest {
  readonly poolId: string;
  /** Keys this request already tried; never granted to it again. */
  readonly excludedKeyIds?: readonly string[];
  /** Tokens to reserve in the granted key's token windows (0 when absent). */
  readonly estimatedTokens?: number;
  /** May take the pool's reserve_for_high share; false when absent. */
  readonly high?: boolean;
}

/**
 * KEY_POOL_EXHAUSTED: keys will free up on their own (retryAfterMs says when).
 * KEY_POOL_UNAVAILABLE: every usable key is parked or excluded; waiting won't help.
 */
export type DenialReason = 'KEY_POOL_EXHAUSTED' | 'KEY_POOL_UNAVAILABLE';

export type AcquireResult =
  | {
      readonly granted: true;
      readonly keyId: string;
      /** Names the reservation for a later settle; "" when the key has no token windows. */
      readonly admissionId: string;
      /** On a key with a concurrency cap: the hold to release when the request ends. */
      readonly holdId?: string;
    }
  | {
      readonly granted: false;
      /** undefined exactly when reason is KEY_POOL_UNAVAILABLE. */
      readonly retryAfterMs: number | undefined;
      readonly reason: DenialReason;
    };

export interface KeyOutcome {
  readonly poolId: string;
  readonly keyId: string;
  readonly httpStatus: number;
  /** The provider's retry-after, already parsed to ms, when it sent one. */
  readonly retryAfterMs?: number;
  /**
   * The key's limit as the provider's headers state it (x-ratelimit-limit-requests,
   * with the window estimated from its reset): followed as if declared when the
   * config declares no limit for the key.
   */
  readonly learnedLimit?: WindowLimit;
  /** What the provider said remains (x-ratelimit-remaining-requests): corrects the store's view. */
  readonly remainingRequests?: number;
  /**
   * The provider said the key's quota (not its rate) is spent (OpenAI's 429
   * insufficient_quota): waiting seconds won't help, only the next period.
   */
  readonly quotaExhausted?: boolean;
}

export interface LeaseRequest {
  readonly poolId: string;
  readonly wantedSlots: number;
  /** Token budget wanted over all the slots; keys with token windows are leased only when it is above 0. */
  readonly wantedTokens?: number;
  readonly excludedKeyIds?: readonly string[];
  /** The slots may be spent by high-priority requests only, so they may come from the reserve_for_high share. */
  readonly high?: boolean;
}

export interface LeaseGrant {
  readonly keyId: string;
  readonly slots: number;
  /** Names the lease in a LeaseReturn; unique per key while the lease counts in any window or quota. */
  readonly leaseId: string;
  /** Keys with token windows only: the token budget carved with the slots... */
  readonly tokens?: number;
  /** ...and its reservation's id, for settles of the requests spent from it. */
  readonly admissionId?: string;
}

/**
 * What a router did not spend of a lease it dropped (expired, replaced,
 * its key removed, the router shutting down): given back to the key's
 * windows, token budget and quotas. The store frees at most what the lease
 * recorded, once: a replayed return frees nothing.
 */
export interface LeaseReturn {
  readonly poolId: string;
  readonly keyId: string;
  readonly leaseId: string;
  readonly slots: number;
  readonly tokens: number;
}

/**
 * Corrects a reservation to what the provider reported. usedTokens below
 * reservedTokens gives the difference back (the reservation shrinks); above
 * it, the excess is recorded as a new admission at settle time.
 */
export interface Settlement {
  readonly poolId: string;
  readonly keyId: string;
  readonly admissionId: string;
  readonly reservedTokens: number;
  readonly usedTokens: number;
}

export interface LeaseResult {
  readonly grants: readonly LeaseGrant[];
  /** When nothing was granted, as for a denied acquire. */
  readonly retryAfterMs: number | undefined;
  readonly reason: DenialReason | undefined;
}
