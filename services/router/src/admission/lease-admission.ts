import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { GrantLeasesResponse, LimiterService, PoolLeases } from '@keymesh/proto/limiter/v1/limiter';
import { durationOfMs, msOfDuration, toUint32, type RpcClient } from '@keymesh/rpc';
import { attr, spanLinkOf, type Telemetry } from '@keymesh/telemetry';
import { INVALID_SPAN_CONTEXT, ROOT_CONTEXT, SpanKind, trace, type Context, type Link, type SpanContext } from '@opentelemetry/api';
import type { AcquireBatcher, Admission } from './acquire-batcher';

interface Lease {
  readonly keyId: string;
  /** Names the lease when its unspent slots and budget go back. */
  readonly leaseId: string;
  slots: number;
  /**
   * False once the provider's count capped the lease (capKey): the limiter
   * reckoned its slots as spent when it heard that count, so they stay spent.
   */
  slotsReturnable: boolean;
  /** Token budget left; Infinity on a key without token limits. */
  tokens: number;
  /** The budget's reservation, for settles; undefined on a key without token limits. */
  readonly admissionId: string | undefined;
  readonly expiresAtMs: number;
  readonly decidedBy: SpanContext;
}

interface Waiter {
  readonly ctx: Context;
  readonly link: Link | undefined;
  readonly resolve: (admission: Admission) => void;
  readonly reject: (err: unknown) => void;
}

interface PoolState {
  leases: Lease[];
  waiters: Waiter[];
  refilling: boolean;
  /** Called once the grant being asked for has landed or failed (requests with token estimates waiting for it). */
  afterRefill: (() => void)[];
  /** The tokens that grant asks for; Infinity until it is sent, since it will count every request until then. */
  refillTokens: number;
  /** Admissions since the last refill was asked for, to size the next one. */
  admittedSinceRefill: number;
  /** Tokens those admissions estimated (pools with token limits), to size the next budget. */
  tokensSinceRefill: number;
  lastRefillMs: number;
  lastGrantedSlots: number;
  /** When the newest leases are four-fifths through their hold. */
  renewAtMs: number;
}

export interface LeaseAdmissionOptions {
  /**
   * How long leases on a pool are valid. Longer means fewer calls, and more
   * capacity parked in an idle router.
   */
  holdMs?: number | ((poolId: string) => number);
}

/** What this router did not spend of a lease it dropped, for GrantLeasesRequest.returns. */
interface UnspentLease {
  readonly poolId: string;
  readonly keyId: string;
  readonly leaseId: string;
  readonly slots: number;
  readonly tokens: number;
}

const DEFAULT_HOLD_MS = 1_000;
/**
 * Returns wait this long for a grant call to ride on before going alone: a
 * busy router asks for leases far more often, an idle one sends at most one
 * call per this interval.
 */
const RETURN_DELAY_MS = 50;
/** Returns kept for a limiter that does not answer; a return older than the longest window frees nothing anyway. */
const MAX_PENDING_RETURNS = 10_000;
// Leases end this much before the limiter's stamp, for the time the grant took to arrive.
const EXPIRY_MARGIN_MS = 5;

/**
 * Admits requests from capacity the limiter leased to this router, so the hot
 * path pays no call per request: a unary grpc-js call costs about as much CPU
 * as the whole proxy path. The limiter records leased slots as admissions at
 * the lease's end, so spending them at any moment before then keeps every
 * key exactly within its limits across all routers.
 *
 * Slices are sized from this router's own recent demand; the limiter caps
 * them at a share of each key's headroom, down to one slot near the limit.
 * What a lease did not spend when it is dropped goes back with the next
 * grant call, so an unspent slot costs its key only until then.
 * Requests that must avoid particular keys (a retry after a failure) take the
 * exact per-request path instead.
 */
export class LeaseAdmission {
  private readonly pools = new Map<string, PoolState>();
  /** Keys the provider refused lately, until when: a grant already in flight must not bring them back. */
  private readonly refused = new Map<string, number>();
  /**
   * Keys whose limit was just learned (see `limitLearned`): a grant numbered
   * at or below the mark was asked for before the limiter heard the limit.
   */
  private readonly unheardUpTo = new Map<string, number>();
  /** Numbers GrantLeases calls in the order they are sent. */
  private grantsSent = 0;
  private readonly pendingRefills = new Set<string>();
  private refillScheduled = false;
  private readonly holdOf: (poolId: string) => number;
  /** Unspent leases to give back with the next GrantLeases call. */
  private unspent: UnspentLease[] = [];
  private returnTimer: NodeJS.Timeout | undefined;
  /** GrantLeases calls not answered yet: their leases must go back too when the router stops. */
  private readonly inFlight = new Set<Promise<void>>();
  private closed = false;

  constructor(
    private readonly limiter: RpcClient<typeof LimiterService>,
    private readonly telemetry: Telemetry,
    private readonly exact: AcquireBatcher,
    options: LeaseAdmissionOptions = {},
  ) {
    const hold = options.holdMs ?? DEFAULT_HOLD_MS;
    this.holdOf = typeof hold === 'number' ? () => hold : hold;
  }

  /**
   * estimatedTokens: set on pools with token limits. Such a request is
   * admitted from a lease only if its estimate fits the lease's budget;
   * otherwise it takes the exact path with its estimate rather than wait,
   * and its demand sizes the next budget.
   *
   * high: a high-priority request. Leases are only ever asked for without
   * priority, so they are carved from the part of each key outside
   * reserve_for_high and any request may spend them; a high request that
   * finds no slot takes the exact path with its priority, which may use the
   * reserve. So no slice from the reserve is ever held here for a normal
   * request to spend.
   */
  admit(
    poolId: string,
    excludedKeyIds: string[],
    requestId: string,
    deadlineMs: number,
    ctx: Context,
    estimatedTokens?: number,
    high = false,
  ): Admission | Promise<Admission> {
    if (excludedKeyIds.length > 0) return this.exact.acquire(poolId, excludedKeyIds, requestId, deadlineMs, ctx, estimatedTokens, high);
    const pool = this.poolState(poolId);
    const nowMs = Date.now();
    const lease = takeSlot(pool, nowMs, estimatedTokens ?? 0);
    if (estimatedTokens !== undefined) {
      pool.admittedSinceRefill++;
      pool.tokensSinceRefill += estimatedTokens;
      if (!lease) {
        // A grant on its way is carved from what the key has left when the limiter hears it: an Acquire
        // sent now could be denied the very room that grant brings this router. When it asked for enough
        // (or is not sent yet, and so counts this request), wait for it and try its lease.
        if (pool.refilling && estimatedTokens <= pool.refillTokens) {
          return new Promise<void>((resume) => pool.afterRefill.push(resume)).then(() => {
            const resumedMs = Date.now();
            // The caller stopped waiting at its deadline: nothing may be spent or reserved for it now.
            if (resumedMs >= deadlineMs) return { granted: false, retryAfterMs: undefined, reason: Reason.DEADLINE_EXCEEDED, decidedBy: INVALID_SPAN_CONTEXT };
            const granted = takeSlot(pool, resumedMs, estimatedTokens);
            if (!granted) return this.exactThenRefill(poolId, excludedKeyIds, requestId, deadlineMs, ctx, estimatedTokens, high);
            this.renewIfLow(poolId, pool, resumedMs);
            return leaseAdmission(granted);
          });
        }
        return this.exactThenRefill(poolId, excludedKeyIds, requestId, deadlineMs, ctx, estimatedTokens, high);
      }
      this.renewIfLow(poolId, pool, nowMs);
      return leaseAdmission(lease);
    }
    if (lease) {
      pool.admittedSinceRefill++;
      this.renewIfLow(poolId, pool, nowMs);
      return { granted: true, keyId: lease.keyId, decidedBy: lease.decidedBy };
    }
    if (high) return this.exact.acquire(poolId, excludedKeyIds, requestId, deadlineMs, ctx, 0, true);
    const span = trace.getSpan(ctx);
    return new Promise<Admission>((resolve, reject) => {
      pool.waiters.push({ ctx, link: span ? spanLinkOf(span) : undefined, resolve, reject });
      this.requestRefill(poolId);
    });
  }

  /**
   * The Acquire is queued before the refill, so that this turn's calls reach the
   * limiter in that order and the new budget is not carved from this request's room.
   */
  private exactThenRefill(poolId: string, excludedKeyIds: string[], requestId: string, deadlineMs: number, ctx: Context, estimatedTokens: number, high: boolean): Promise<Admission> {
    const exact = this.exact.acquire(poolId, excludedKeyIds, requestId, deadlineMs, ctx, estimatedTokens, high);
    this.requestRefill(poolId);
    return exact;
  }

  /**
   * Per request through the batched Acquire (one call per turn), never from
   * a lease: for pools with a concurrency limit. A leased slot says "one
   * request may start before the lease ends", not "one may be in flight":
   * spent, it frees nothing when its request ends, so leases could never
   * count requests in flight exactly across replicas, and slicing free holds
   * into leases would park them idle in routers that don't need them. The
   * trade-off: such pools pay an Acquire per event-loop turn (and a Release
   * per turn) instead of none, which their providers' low concurrency caps
   * make small next to the requests themselves.
   */
  admitExact(poolId: string, excludedKeyIds: string[], requestId: string, deadlineMs: number, ctx: Context, estimatedTokens?: number, high = false): Promise<Admission> {
    return this.exact.acquire(poolId, excludedKeyIds, requestId, deadlineMs, ctx, estimatedTokens, high);
  }

  /**
   * Stops admitting to a key the provider just refused, until `untilMs`
   * (its retry-after; Infinity for a key that was rejected outright). The
   * limiter cools or parks it too, but a grant sent before it heard may still
   * be on its way.
   */
  forgetKey(poolId: string, keyId: string, untilMs: number): void {
    this.refused.set(`${poolId}\u0000${keyId}`, untilMs);
    const pool = this.pools.get(poolId);
    if (pool) pool.leases = this.keepLeases(poolId, pool.leases, (l) => l.keyId !== keyId);
  }

  /**
   * The provider has just told a key's limit, and the limiter is told it
   * next: slots leased for the key so far, and those of grants already asked
   * for, were counted in no window, so none of them is spent. A grant in
   * flight would otherwise bring such slots back after the provider's
   * remaining count had capped the key (an upstream 429 per slot). Grants
   * asked for from now on reach the limiter after the report (one channel,
   * handled in order), so they are counted.
   */
  limitLearned(poolId: string, keyId: string): void {
    this.unheardUpTo.set(`${poolId}\u0000${keyId}`, this.grantsSent);
    const pool = this.pools.get(poolId);
    if (pool) pool.leases = this.keepLeases(poolId, pool.leases, (l) => l.keyId !== keyId);
  }

  /**
   * The provider says a key has only `remaining` requests left: this router
   * keeps at most that many of its leased slots for it, so a lease granted
   * before the limiter heard never outruns the provider's own count.
   */
  capKey(poolId: string, keyId: string, remaining: number): void {
    const pool = this.pools.get(poolId);
    if (pool === undefined) return;
    let allowed = remaining;
    for (const lease of pool.leases) {
      if (lease.keyId !== keyId) continue;
      lease.slots = Math.min(lease.slots, allowed);
      lease.slotsReturnable = false;
      allowed -= lease.slots;
    }
  }

  /**
   * Gives back a slot `admit` granted from a lease, unspent (a later scope of
   * the request denied it), with the `tokens` it took from the lease's
   * budget: the lease that granted it (same key, same grant) takes them back
   * while it lasts. False when the slot came from an exact Acquire or its
   * lease has ended: the limiter has counted it.
   */
  giveBack(poolId: string, admission: Admission, tokens: number): boolean {
    if (!admission.granted) return false;
    const pool = this.pools.get(poolId);
    if (pool === undefined) return false;
    const nowMs = Date.now();
    for (const lease of pool.leases) {
      if (lease.keyId !== admission.keyId || lease.decidedBy !== admission.decidedBy || lease.expiresAtMs <= nowMs) continue;
      lease.slots++;
      lease.tokens += tokens;
      return true;
    }
    return false;
  }

  /**
   * Stops admitting and gives back every lease still held, and those of
   * grants still on their way, in one last GrantLeases call; waits at most
   * `timeoutMs` for it all (a limiter that does not answer keeps the slots
   * counted until they leave its windows, as if they had been spent).
   */
  async close(timeoutMs = 1_000): Promise<void> {
    const deadlineMs = Date.now() + timeoutMs;
    this.closed = true;
    if (this.inFlight.size > 0) await Promise.race([Promise.all(this.inFlight), delay(timeoutMs)]);
    for (const [poolId, pool] of this.pools) pool.leases = this.keepLeases(poolId, pool.leases, () => false);
    clearTimeout(this.returnTimer);
    this.returnTimer = undefined;
    await this.sendReturns(Math.max(1, deadlineMs - Date.now()));
  }

  /** A new policy may have moved keys between pools or replaced them: start afresh. */
  reset(): void {
    for (const [poolId, pool] of this.pools) pool.leases = this.keepLeases(poolId, pool.leases, () => false);
    this.refused.clear();
    this.unheardUpTo.clear();
  }

  private dropExpired(poolId: string): void {
    const pool = this.pools.get(poolId);
    if (!pool) return;
    const nowMs = Date.now();
    pool.leases = this.keepLeases(poolId, pool.leases, (l) => l.expiresAtMs > nowMs);
  }

  /** The leases that pass `keep`; the others are dropped, and what they did not spend is given back. */
  private keepLeases(poolId: string, leases: Lease[], keep: (lease: Lease) => boolean): Lease[] {
    const kept: Lease[] = [];
    for (const lease of leases) {
      if (keep(lease)) kept.push(lease);
      else this.returnUnspent(poolId, lease);
    }
    return kept;
  }

  /** Queues what a dropped lease did not spend for the limiter, on the next GrantLeases call. */
  private returnUnspent(poolId: string, lease: Lease): void {
    const slots = lease.slotsReturnable ? lease.slots : 0;
    const tokens = lease.admissionId !== undefined ? lease.tokens : 0;
    if (slots <= 0 && tokens <= 0) return;
    this.unspent.push({ poolId, keyId: lease.keyId, leaseId: lease.leaseId, slots, tokens });
    if (this.unspent.length > MAX_PENDING_RETURNS) this.unspent.splice(0, this.unspent.length - MAX_PENDING_RETURNS);
    if (this.returnTimer === undefined && !this.closed) {
      this.returnTimer = setTimeout(() => {
        this.returnTimer = undefined;
        void this.sendReturns(2_000);
      }, RETURN_DELAY_MS);
      this.returnTimer.unref();
    }
  }

  /** The returns for the next GrantLeases call, which puts them back if it fails (a replayed return frees nothing twice). */
  private takeReturns(): UnspentLease[] {
    const returns = this.unspent;
    this.unspent = [];
    return returns;
  }

  private keepUnsent(returns: UnspentLease[]): void {
    if (!this.closed) this.unspent = returns.concat(this.unspent).slice(-MAX_PENDING_RETURNS);
  }

  /** A GrantLeases call with returns only: no grant call came to carry them. */
  private sendReturns(timeoutMs: number): Promise<void> {
    const returns = this.takeReturns();
    if (returns.length === 0) return Promise.resolve();
    return this.limiter.grantLeases({ requests: [], returns }, { timeoutMs }).then(
      () => undefined,
      () => this.keepUnsent(returns),
    );
  }

  private isRefused(poolId: string, keyId: string, nowMs: number): boolean {
    if (this.refused.size === 0) return false;
    const key = `${poolId}\u0000${keyId}`;
    const untilMs = this.refused.get(key);
    if (untilMs === undefined) return false;
    if (untilMs > nowMs) return true;
    this.refused.delete(key);
    return false;
  }

  /** Whether grant number `grantNo` was asked for before the limiter heard the key's limit. */
  private isUnheard(poolId: string, keyId: string, grantNo: number): boolean {
    if (this.unheardUpTo.size === 0) return false;
    const key = `${poolId}\u0000${keyId}`;
    const upTo = this.unheardUpTo.get(key);
    if (upTo === undefined) return false;
    if (grantNo <= upTo) return true;
    // Every grant from now on is numbered past the mark.
    this.unheardUpTo.delete(key);
    return false;
  }

  private poolState(poolId: string): PoolState {
    let pool = this.pools.get(poolId);
    if (!pool) {
      pool = { leases: [], waiters: [], refilling: false, afterRefill: [], refillTokens: 0, admittedSinceRefill: 0, tokensSinceRefill: 0, lastRefillMs: Date.now(), lastGrantedSlots: 0, renewAtMs: 0 };
      this.pools.set(poolId, pool);
    }
    return pool;
  }

  /** Renews before the slots run low or the leases run out, so no request waits for a grant. */
  private renewIfLow(poolId: string, pool: PoolState, nowMs: number): void {
    if (!pool.refilling && (remainingSlots(pool, nowMs) * 4 <= pool.lastGrantedSlots || nowMs >= pool.renewAtMs)) this.requestRefill(poolId);
  }

  private refillEnded(pool: PoolState): void {
    pool.refilling = false;
    if (pool.afterRefill.length === 0) return;
    const waiting = pool.afterRefill;
    pool.afterRefill = [];
    for (const resume of waiting) resume();
  }

  private requestRefill(poolId: string): void {
    const pool = this.poolState(poolId);
    if (pool.refilling) return;
    pool.refilling = true;
    pool.refillTokens = Number.POSITIVE_INFINITY;
    this.pendingRefills.add(poolId);
    if (!this.refillScheduled) {
      this.refillScheduled = true;
      setImmediate(() => this.refill());
    }
  }

  /** One GrantLeases call for every pool that ran low in this event-loop turn (one per hold, in practice one). */
  private refill(): void {
    this.refillScheduled = false;
    const byHold = new Map<number, string[]>();
    for (const poolId of this.pendingRefills) {
      const holdMs = this.holdOf(poolId);
      const group = byHold.get(holdMs);
      if (group) group.push(poolId);
      else byHold.set(holdMs, [poolId]);
    }
    this.pendingRefills.clear();
    for (const [holdMs, poolIds] of byHold) this.grant(poolIds, holdMs);
  }

  private grant(poolIds: string[], holdMs: number): void {
    const nowMs = Date.now();
    const links: Link[] = [];
    let parent: Context = ROOT_CONTEXT;
    const wantedTokens: number[] = [];
    const wanted = poolIds.map((poolId) => {
      const pool = this.poolState(poolId);
      for (const w of pool.waiters) {
        if (parent === ROOT_CONTEXT) parent = w.ctx;
        else if (w.link) links.push(w.link);
      }
      const elapsedMs = Math.max(nowMs - pool.lastRefillMs, 50);
      // What the last interval used, scaled to one hold, less what is still
      // leased: an unspent slot stays counted until its lease ends, so every
      // slot asked for beyond demand is capacity nobody can use.
      // Slots whose lease ends within half a hold are about to lapse and don't count.
      const expected = Math.ceil((pool.admittedSinceRefill * holdMs) / elapsedMs) - remainingSlots(pool, nowMs + holdMs / 2);
      // Likewise for tokens: an unspent budget stays counted in the key's windows until its lease ends.
      wantedTokens.push(toUint32(Math.max(0, Math.ceil((pool.tokensSinceRefill * holdMs) / elapsedMs) - remainingTokens(pool, nowMs + holdMs / 2))));
      pool.refillTokens = wantedTokens[wantedTokens.length - 1]!;
      pool.admittedSinceRefill = 0;
      pool.tokensSinceRefill = 0;
      pool.lastRefillMs = nowMs;
      return Math.max(pool.waiters.length, expected);
    });
    // A renewal that finds enough still leased asks for nothing.
    const asking = poolIds.filter((poolId, i) => {
      if (wanted[i] > 0) return true;
      const pool = this.poolState(poolId);
      this.refillEnded(pool);
      pool.renewAtMs = nowMs + holdMs / 10;
      return false;
    });
    if (asking.length === 0) return;
    const requests = asking.map((poolId) => {
      const i = poolIds.indexOf(poolId);
      return { poolId, wantedSlots: wanted[i], wantedTokens: wantedTokens[i], excludedKeyIds: [] };
    });
    poolIds = asking;
    // Traced in the first waiting request's context (a background refill has none)
    // and linked from every admission it serves.
    const span = this.telemetry.tracer.startSpan(
      'keymesh.lease.grant',
      { kind: SpanKind.INTERNAL, links, attributes: { [attr.KEYMESH_COMPONENT]: 'router', [attr.KEYMESH_BATCH_SIZE]: requests.length } },
      parent,
    );
    const decidedBy = span.spanContext();
    const grantNo = ++this.grantsSent;
    const returns = this.takeReturns();
    const call = this.limiter
      .grantLeases(
        { requests, hold: durationOfMs(holdMs), returns },
        { timeoutMs: 2_000, parent: trace.setSpan(parent, span) },
      )
      .then(
        (response) => {
          span.end();
          this.apply(poolIds, response, nowMs + holdMs - Math.min(EXPIRY_MARGIN_MS, holdMs / 4), decidedBy, holdMs, grantNo);
        },
        (err: unknown) => {
          span.end();
          this.keepUnsent(returns);
          this.fail(poolIds, err);
        },
      )
      .finally(() => this.inFlight.delete(call));
    this.inFlight.add(call);
  }

  private apply(poolIds: string[], response: GrantLeasesResponse, expiresAtMs: number, decidedBy: SpanContext, holdMs: number, grantNo: number): void {
    const nowMs = Date.now();
    for (let i = 0; i < poolIds.length; i++) {
      const pool = this.poolState(poolIds[i]);
      this.refillEnded(pool);
      const granted: PoolLeases | undefined = response.pools[i];
      pool.leases = this.keepLeases(poolIds[i], pool.leases, (l) => l.slots > 0 && l.expiresAtMs > nowMs);
      let total = 0;
      let budgeted = false;
      let unheard = false;
      for (const lease of granted?.leases ?? []) {
        if (lease.slots === 0) continue;
        const hasBudget = lease.admissionId !== '';
        const held: Lease = {
          keyId: lease.keyId,
          leaseId: lease.leaseId,
          slots: lease.slots,
          slotsReturnable: true,
          tokens: hasBudget ? lease.tokens : Number.POSITIVE_INFINITY,
          admissionId: hasBudget ? lease.admissionId : undefined,
          expiresAtMs,
          decidedBy,
        };
        // Slots this router won't spend go straight back.
        if (this.closed || this.isRefused(poolIds[i], lease.keyId, nowMs)) {
          this.returnUnspent(poolIds[i], held);
          continue;
        }
        if (this.isUnheard(poolIds[i], lease.keyId, grantNo)) {
          unheard = true;
          this.returnUnspent(poolIds[i], held);
          continue;
        }
        budgeted ||= hasBudget;
        pool.leases.push(held);
        total += lease.slots;
      }
      pool.lastGrantedSlots = total;
      // Unspent slots and budget go back when their lease ends, not at the next refill, which an idle pool never sends.
      if (total > 0) setTimeout(() => this.dropExpired(poolIds[i]), Math.max(0, expiresAtMs - nowMs) + 1).unref();
      pool.renewAtMs = expiresAtMs - holdMs / 5;
      const waiters = pool.waiters;
      pool.waiters = [];
      let served = 0;
      for (; served < waiters.length; served++) {
        const lease = takeSlot(pool, nowMs, 0);
        if (!lease) break;
        pool.admittedSinceRefill++;
        waiters[served].resolve({ granted: true, keyId: lease.keyId, decidedBy });
      }
      const rest = waiters.slice(served);
      if (rest.length === 0) continue;
      if (total === 0 && !unheard) {
        // Nothing to lease: the pool is full (or parked) right now; say when it frees up.
        const retry = granted?.retryAfter;
        const denial: Admission = {
          granted: false,
          retryAfterMs: msOfDuration(retry),
          reason: granted?.reason || Reason.KEY_POOL_EXHAUSTED,
          decidedBy,
        };
        for (const w of rest) w.resolve(denial);
      } else {
        // More requests than slots, or slots granted before the limiter heard a limit: ask again for the rest.
        pool.waiters = rest.concat(pool.waiters);
        this.requestRefill(poolIds[i]);
      }
    }
  }

  private fail(poolIds: string[], err: unknown): void {
    const error = KeymeshError.from(err);
    const unavailable = new KeymeshError({ code: Code.Unavailable, reason: Reason.UNAVAILABLE, message: 'the limiter did not answer', cause: error });
    for (const poolId of poolIds) {
      const pool = this.poolState(poolId);
      this.refillEnded(pool);
      const waiters = pool.waiters;
      pool.waiters = [];
      for (const w of waiters) w.reject(unavailable);
    }
  }
}

function leaseAdmission(lease: Lease): Admission {
  return lease.admissionId === undefined
    ? { granted: true, keyId: lease.keyId, decidedBy: lease.decidedBy }
    : { granted: true, keyId: lease.keyId, admissionId: lease.admissionId, decidedBy: lease.decidedBy };
}

/** A lease with a slot and at least `tokens` of budget left (the most slots wins), spent from. */
function takeSlot(pool: PoolState, nowMs: number, tokens: number): Lease | undefined {
  let best: Lease | undefined;
  for (const lease of pool.leases) {
    if (lease.slots > 0 && lease.tokens >= tokens && lease.expiresAtMs > nowMs && (best === undefined || lease.slots > best.slots)) best = lease;
  }
  if (best) {
    best.slots--;
    best.tokens -= tokens;
  }
  return best;
}

function remainingTokens(pool: PoolState, nowMs: number): number {
  let total = 0;
  for (const lease of pool.leases) if (lease.expiresAtMs > nowMs && lease.admissionId !== undefined) total += lease.tokens;
  return total;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function remainingSlots(pool: PoolState, nowMs: number): number {
  let total = 0;
  for (const lease of pool.leases) if (lease.expiresAtMs > nowMs) total += lease.slots;
  return total;
}
