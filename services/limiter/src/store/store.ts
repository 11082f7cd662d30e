import type { HoldRef, KeyConditionState, KeyState, LeaseGrant, LeaseReturn, PoolSpec, Settlement, WindowLimit } from '../domain/types';

/**
 * Per-key limiter state (sliding windows, conditions) behind one small interface,
 * so the memory store and a Redis store (Lua scripts) are interchangeable.
 *
 * Every method is one atomic step and, for Redis, one round trip: the store
 * itself picks the key in `acquire` (read windows + choose + record in one Lua
 * script), because a read-then-write from the domain would race across replicas.
 *
 * Methods return Promises. `T | Promise<T>` would save the memory store one
 * Promise per call, but every caller would have to branch on it forever, and
 * the limiter's callers are async anyway (a gRPC handler, ~0.5 ms per call);
 * a resolved Promise costs well under a microsecond. Batching (`acquire` takes
 * many requests) is where the hot path saves, not in the return type.
 *
 * Keys are identified by (poolId, keyId): a key listed in two pools has two
 * independent states.
 */
export interface LimiterStore {
  /**
   * Replaces the whole key set at once. Specs arrive validated. A key whose
   * limits are unchanged keeps its windows; a key whose limits changed gets new
   * windows seeded with its most recent admissions; every kept key keeps its
   * condition and round-robin position; keys not listed are dropped.
   * Idempotent, so every replica may apply the same config.
   */
  configure(pools: readonly PoolSpec[]): Promise<void>;

  /**
   * Decides each request in order, as if one after the other, in one atomic step:
   * among the candidates that are known, not parked, not cooling and have room in
   * every window and calendar quota (less the high-priority reserve for other
   * requests), grants one by the pool's key selection (headroom: the most
   * headroom, min over its windows and quotas of remaining/limit, none =
   * infinite, ties to the least recently granted; weighted: smooth weighted
   * round robin among them; cheapest: the lowest cost, ties by headroom), and
   * records the admission in each of them. A
   * spent quota's wait is the end of its period (the zone's next midnight).
   * Unknown candidates are skipped (a config swap may be in flight).
   */
  acquire(requests: readonly KeyCandidates[], nowMs: number, holdTtlMs?: number): Promise<AcquireDecision[]>;

  /**
   * Frees holds at once, in one atomic step. Unknown or already expired holds
   * are skipped: a release that arrives after the hold expired frees nothing twice.
   *
   * Concurrency caps (KeySpec.concurrency): a key with as many unexpired
   * holds as its cap is not eligible for acquire (its wait: until its
   * earliest hold expires) and is never leased (a lease slot could be spent
   * by any number of requests at once). An acquire granted on such a key
   * takes a hold that expires at nowMs + holdTtlMs (DEFAULT_HOLD_TTL_MS when
   * not given): a holder that dies without releasing frees it then, not before.
   */
  release(holds: readonly HoldRef[], nowMs: number): Promise<void>;

  /**
   * Extends holds still in flight to nowMs + holdTtlMs, in one atomic step
   * (long streams). Per hold: whether it was still held; an expired one is
   * not brought back, as its slot may be someone else's by now.
   */
  renew(holds: readonly HoldRef[], nowMs: number, holdTtlMs: number): Promise<boolean[]>;

  /**
   * Carves lease slots for each request, in order, in one atomic step. Every
   * slot is checked against the windows at nowMs and recorded as an admission
   * at nowMs + holdMs, the latest moment it may be spent: so each pair of
   * admissions, leased or not, is counted together whenever their real times
   * could lie within one window. wantedSlots (at least 1) are split over the
   * eligible keys by the pool's key selection, each key taking at most a
   * quarter of its headroom (at least one slot; headroom less the reserve
   * unless the lease is high): headroom, least recently granted first, each
   * taking ceil(unassigned / keys left); weighted, slot by slot by the same
   * smooth weighted round robin as acquire; cheapest, cheapest first. Never
   * more slots than wanted, since an unspent slot stays counted until its
   * lease ends. Calendar quotas count the slots (and
   * budget) in the period of nowMs, and also in the next one when nowMs +
   * holdMs lies past its end: the slots may be spent on either side.
   *
   * `returns` are applied first, in the same atomic step, so a router's
   * unspent slots are free for the grants it asks for with them. A return
   * removes up to its slots of the lease's admissions (those at the lease's
   * stamp) from the key's windows, shrinks the lease's token budget by up
   * to its tokens, and takes both back from the quota periods the lease
   * counted them in; never more than the lease recorded, and only once (the
   * lease's record is consumed). A return for a lease no longer in any
   * window or quota period, for an unknown key, or for a key whose limits
   * changed since the grant (its windows were rebuilt: the lease's
   * admissions may not be there) frees no window slots; the last still
   * gives back tokens and quotas.
   */
  lease(requests: readonly LeaseCandidates[], nowMs: number, holdMs: number, returns?: readonly LeaseReturn[]): Promise<LeaseDecision[]>;

  /**
   * Corrects reservations to the provider's reported usage, in one atomic
   * step. A refund shrinks the reservation's weight where it was recorded:
   * every decision made while it weighed more was stricter, and its real
   * tokens were spent no later than its stamp, so no interval ever counts
   * fewer tokens than were really spent in it. An excess (the estimate fell
   * short) is recorded as a new admission at nowMs: it can't be placed in the
   * past without windows already decided exceeding their limit, so it is
   * counted in every window from now on. Unknown keys and reservations that
   * have left every window are skipped (an excess is still recorded).
   */
  settle(settlements: readonly Settlement[], nowMs: number): Promise<void>;

  /**
   * What the provider's rate-limit headers said about a key, in one atomic step.
   * `limit`: the key's own limit; it becomes the key's window only while the
   * config declares none for it (a declared limit always wins). A learned limit
   * is kept by later `configure` calls of every replica, and a later report with
   * the same request count never shrinks its window (the provider's reset is at
   * most the window, so the largest one seen is the best estimate).
   * `remainingRequests`: when the key's window (the one whose request count is
   * `limit.requests`, else its tightest) has more room than that, the difference
   * is recorded as admissions at nowMs: the provider saw requests this store did
   * not (another client, a replica that lost its state, a limit just learned).
   */
  learn(key: KeyRef, observed: ObservedLimits, nowMs: number): Promise<KeyConditionState | undefined>;

  /** Cools a key until max(its current cooling end, untilMs). Parked stays parked. */
  cool(key: KeyRef, untilMs: number, reason: string, nowMs: number): Promise<KeyConditionState | undefined>;

  /** Parks a key. Its cooling end is kept and applies again once it is unparked. */
  park(key: KeyRef, reason: string, nowMs: number): Promise<KeyConditionState | undefined>;

  /** Lifts a park; no effect on a key that isn't parked. */
  unpark(key: KeyRef, nowMs: number): Promise<KeyConditionState | undefined>;

  /** The key's condition at nowMs. */
  condition(key: KeyRef, nowMs: number): Promise<KeyConditionState | undefined>;

  /** Every key (of one pool, or of all), in config order. */
  snapshot(poolId: string | undefined, nowMs: number): Promise<KeyState[]>;

  close(): Promise<void>;
}

/** How long a hold lasts unless renewed, when the limiter is not told otherwise. */
export const DEFAULT_HOLD_TTL_MS = 30_000;

export interface KeyRef {
  readonly poolId: string;
  readonly keyId: string;
}

export interface ObservedLimits {
  readonly limit: WindowLimit | undefined;
  readonly remainingRequests: number | undefined;
}

/** The keys one request may take, already filtered of its excluded keys. */
export interface KeyCandidates {
  readonly poolId: string;
  readonly keyIds: readonly string[];
  /**
   * Tokens the request reserves in a key's token windows (0 when absent). A
   * key whose token limit is below it can never take the request.
   */
  readonly tokens?: number;
  /**
   * May use the pool's reserve_for_high share. Otherwise a key is eligible
   * only while, after the admission, each of its request and token windows
   * keeps ceil(share × limit) free (reservedOf); the retry-after is until
   * that holds.
   */
  readonly high?: boolean;
}

export interface LeaseCandidates {
  readonly poolId: string;
  readonly keyIds: readonly string[];
  readonly wantedSlots: number;
  /**
   * Token budget wanted over all slots (0 when absent). A key with token
   * windows is leased only when it is above 0 (slots without a budget would
   * spend tokens no window counts) and only while it has a token of room;
   * it then gets a budget as well as slots: its share of the wanted tokens,
   * at most a quarter of its token headroom but at least one slot's average
   * (wantedTokens / wantedSlots) when that fits, recorded like the slots at
   * nowMs + holdMs as one admission the router's settles shrink.
   */
  readonly wantedTokens?: number;
  /** As KeyCandidates.high: without it, slots and budgets are carved from the unreserved part only. */
  readonly high?: boolean;
}

export interface LeaseDecision {
  readonly grants: readonly LeaseGrant[];
  /** When nothing was granted: as AcquireDecision's retryAfterMs. */
  readonly retryAfterMs: number | undefined;
}

export type AcquireDecision =
  | {
      readonly granted: true;
      readonly keyId: string;
      /** The reservation's id in the key's token log; "" when the key has no token windows. */
      readonly admissionId: string;
      /** On a key with a concurrency cap: the hold this admission took (see release). */
      readonly holdId?: string;
    }
  | {
      readonly granted: false;
      /**
       * The earliest wait until one of the candidates becomes admissible (the max
       * of its cooling and its windows' waits); undefined when no candidate can
       * become admissible on its own (all parked or unknown, or none given).
       */
      readonly retryAfterMs: number | undefined;
    };
