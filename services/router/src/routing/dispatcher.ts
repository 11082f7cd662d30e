import type { PolicyRoute, PolicyTarget, TokenPrice } from '@keymesh/config';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { durationOfMs, type RpcClient } from '@keymesh/rpc';
import { attr, type Logger, type Telemetry } from '@keymesh/telemetry';
import { SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api';
import type { Admission } from '../admission/acquire-batcher';
import type { LeaseAdmission } from '../admission/lease-admission';
import type { RequestTokens } from '../admission/request-tokens';
import type { KeyMaterialCache } from '../keys/key-material';
import { HoldKeeper, type HeldSlot } from '../admission/hold-keeper';
import { KeyProbes, type GateAnswer } from '../admission/key-probe';
import { highestPriceOf, isScopeSlot, ScopeAdmission, scopeDenied, scopeMessage, type ScopeDenial, type ScopeGate, type ScopeSlot } from '../admission/scope-admission';
import { LimitLearner, type LimitReport } from '../admission/limit-learner';
import { WaitQueue, type RequestPriority, type WaitTicket } from '../admission/wait-queue';
import type { LimitSnapshot, ProviderFailure } from '../providers';
import { BreakerBoard, Permit, type CircuitBreaker } from '../resilience';
import type { ProviderBinding, RouteTable } from './route-table';
import { orderTargets, TargetBoard } from './strategy';
import { AttemptCancellation, type CancelSignal } from './cancellation';

/** One client request as the dispatcher sees it. */
export interface RequestScope {
  readonly requestId: string;
  readonly tenantId: string;
  readonly route: PolicyRoute;
  readonly deadlineMs: number;
  /** Aborted when the caller goes away or the deadline passes. */
  readonly signal: CancelSignal;
  /** Who waits first when every key is momentarily full; 'normal' when not given. */
  readonly priority?: RequestPriority;
  /** The request's route span: the parent of everything done for it. */
  readonly traceContext: Context;
  /** Token accounting, for targets whose pool has token limits; none: nothing is reserved. */
  readonly tokens?: RequestTokens;
  /**
   * The concurrency hold of the key the request is on, while it has one
   * (pools with a concurrency limit only): released by Dispatcher.releaseHold
   * when the request ends or moves to another key.
   */
  hold?: HeldSlot;
}

export interface Attempt {
  readonly target: PolicyTarget;
  readonly provider: ProviderBinding;
  readonly keyId: string;
  readonly secret: string;
  /** 1-based. */
  readonly number: number;
  readonly signal: CancelSignal;
  /** The request's own signal (caller gone, deadline), without the provider's per-attempt timeout. */
  readonly requestSignal: CancelSignal;
  readonly span: Span;
}

export type AttemptResult<T> =
  | {
      ok: true;
      value: T;
      /** Set when the provider's headers said the key has nothing left: until when. */
      spentUntilMs?: number;
      /** What the provider's rate-limit headers said, to learn the key's limit from. */
      limits?: LimitSnapshot;
    }
  | { ok: false; failure: ProviderFailure; limits?: LimitSnapshot };

export interface Served<T> {
  readonly value: T;
  readonly target: PolicyTarget;
  readonly keyId: string;
  readonly attempts: number;
  /** Set when the route's last resort served: its degraded target, or its static answer. */
  readonly degraded?: 'target' | 'answer';
}

/** A later round of a request that holds its scope slots takes no new ones. */
const NO_GATES: readonly (ScopeGate | undefined)[] = [];

/**
 * Who "served" a static degraded answer: keymesh itself, no provider and no
 * key, so headers and usage never name a provider that did not answer.
 */

export const DEGRADED_ANSWER_TARGET: PolicyTarget = Object.freeze({ poolId: '', providerId: 'keymesh', model: 'degraded-answer', weight: null, price: null });

export interface DispatcherDeps {
  table: () => RouteTable;
  admission: LeaseAdmission;
  keys: KeyMaterialCache;
  limiter: RpcClient<typeof LimiterService>;
  telemetry: Telemetry;
  logger: Logger;
  /** Circuit breakers per provider and per key; this router's own when not given. */
  breakers?: BreakerBoard;
  /** In-flight counts and latency per target that strategies order by; this router's own when not given. */
  targets?: TargetBoard;
  /** [0, 1), for weighted routes; Math.random when not given. */
  random?: () => number;
  /** Which rate-limit headers the limiter needs to hear; this router's own when not given. */
  learner?: LimitLearner;
  /** One request at a time to a key whose limit nobody stated, until it answers; this router's own when not given. */
  probes?: KeyProbes;
  /** The lines requests wait in when every key of their route is momentarily full; this router's own when not given. */
  waits?: WaitQueue;
  /** Admission on tenants, routes and pool totals with limits; settles given-back tokens with the limiter directly when not given. */
  scopes?: ScopeAdmission;
}

/** What a request has done so far, across its rounds. */
interface RequestProgress {
  /** Provider calls made. */
  attempts: number;
  /** Its slots on its tenant and route, while it holds them. */
  scopeSlots: ScopeSlot[] | undefined;
}

/** Failures another round may cure: provider trouble, and keys full until a known time. */
const RETRIABLE_REASONS = new Set<string>([Reason.PROVIDER_UNAVAILABLE, Reason.KEY_POOL_EXHAUSTED, Reason.UNAVAILABLE]);
const MAX_BACKOFF_MS = 10_000;
/** How long this router keeps off a key whose quota is spent before asking the limiter (which knows the period) again. */
const QUOTA_RECHECK_MS = 60_000;
// TODO(circuit breakers per key and per provider): move to libs/telemetry's attributes with the others.
const KEYMESH_BREAKER_STATE = 'keymesh.breaker.state';
/** Refusals because every target's breaker is open: another round now would only be refused again. */
const breakerRefusals = new WeakSet<KeymeshError>();
/**
 * Failures that mean providers could not serve, which a degraded last resort
 * may answer. A caller's own mistakes (bad request, unknown model, bad
 * virtual key) and a caller who left are never papered over.
 */
const DEGRADABLE_REASONS = new Set<string>([
  Reason.PROVIDER_UNAVAILABLE,
  Reason.PROVIDER_ERROR,
  Reason.KEY_POOL_EXHAUSTED,
  Reason.KEY_POOL_UNAVAILABLE,
  Reason.UNAVAILABLE,
  Reason.DEADLINE_EXCEEDED,
]);

function sleep(ms: number, signal: CancelSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * The signal one attempt runs under: the request's own, plus the provider's
 * per-attempt timeout when that ends first, so a provider that hangs costs
 * one attempt rather than the whole deadline. The extra timer is only made
 * when it can matter.
 */
function attemptSignal(scope: RequestScope, providerTimeoutMs: number): CancelSignal {
  if (Date.now() + providerTimeoutMs >= scope.deadlineMs) return scope.signal;
  return new AttemptCancellation(scope.signal, providerTimeoutMs);
}

/**
 * Runs a request's attempts: for each target in order, admit a key, call the
 * provider, and on a key-level failure (429, 401/403, quota) report it to the
 * limiter and move to another key at once; the limiter cools or parks the key
 * so later requests skip it without an upstream call.
 */
export class Dispatcher {
  readonly breakers: BreakerBoard;
  readonly targets: TargetBoard;
  private readonly random: () => number;
  readonly learner: LimitLearner;
  readonly probes: KeyProbes;
  readonly waits: WaitQueue;
  private readonly scopes: ScopeAdmission;
  readonly holds: HoldKeeper;
  /** A request's place in its route's line, while it has one. */
  private readonly tickets = new WeakMap<RequestScope, WaitTicket>();

  constructor(private readonly deps: DispatcherDeps) {
    this.breakers = deps.breakers ?? new BreakerBoard();
    this.targets = deps.targets ?? new TargetBoard();
    this.random = deps.random ?? Math.random;
    this.learner = deps.learner ?? new LimitLearner();
    this.probes = deps.probes ?? new KeyProbes();
    this.waits = deps.waits ?? new WaitQueue();
    this.scopes =
      deps.scopes ??
      new ScopeAdmission(deps.admission, (settlement) =>
        deps.limiter.settle({ settlements: [settlement] }, { timeoutMs: 2_000 }).catch((err: unknown) => deps.logger.warn('could not give tokens back to a scope', { error: err as Error })),
      );
    this.holds = new HoldKeeper(deps.limiter, deps.logger, (poolIds) => this.slotsReturned(poolIds));
  }

  /** Lines of routes on pools whose concurrency slots were just given back get their turn now. */
  private slotsReturned(poolIds: ReadonlySet<string>): void {
    for (const route of this.deps.table().routes.values()) {
      if (this.waits.size(route.alias) === 0) continue;
      const degraded = route.degraded?.kind === 'target' ? route.degraded.target : undefined;
      if (route.targets.some((t) => poolIds.has(t.poolId)) || (degraded !== undefined && poolIds.has(degraded.poolId))) this.waits.wake(route.alias);
    }
  }

  /**
   * Gives back the request's concurrency hold, if it has one: at its end
   * (both edges), when it moves to another key, and before it waits for a
   * retry. Its abort (caller gone, deadline) releases it at once as well.
   */
  releaseHold(scope: RequestScope): void {
    const hold = scope.hold;
    if (hold === undefined) return;
    scope.hold = undefined;
    this.holds.release(hold);
  }

  /**
   * Serves a request from the route's targets, in the order its strategy
   * gives, with retry rounds and, on routes with a max_wait, turns in the
   * route's line while every key is momentarily full; when they all fail
   * because providers could not serve, from the route's degraded target, or
   * its static answer made by `staticAnswer` (left out where no static answer
   * fits, e.g. embeddings).
   */
  run<T>(
    scope: RequestScope,
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    staticAnswer?: (answer: string) => T,
  ): Promise<Served<T>> {
    // Most routes have no line to wait in: they skip an async frame (and its allocations) per request.
    if (scope.route.maxWaitMs <= 0) return this.serve(scope, attempt, staticAnswer);
    return this.serveInLine(scope, attempt, staticAnswer);
  }

  private async serveInLine<T>(
    scope: RequestScope,
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    staticAnswer: ((answer: string) => T) | undefined,
  ): Promise<Served<T>> {
    const onAbort = (): void => this.leaveLine(scope, false);
    scope.signal.addEventListener('abort', onAbort, { once: true });
    try {
      // Newcomers queue behind the requests already waiting, so returning capacity goes in order.
      const line = scope.route.alias;
      if (this.waits.size(line) > 0) {
        const ticket = this.joinLine(scope, undefined);
        if (!(await ticket.next(undefined))) throw this.turnedAway(scope, undefined, ticket.retryAfterMs());
        this.throwIfDone(scope);
      }
      return await this.serve(scope, attempt, staticAnswer);
    } finally {
      scope.signal.removeEventListener('abort', onAbort);
      this.leaveLine(scope, false);
    }
  }

  private serve<T>(
    scope: RequestScope,
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    staticAnswer: ((answer: string) => T) | undefined,
  ): Promise<Served<T>> {
    const counter: RequestProgress = { attempts: 0, scopeSlots: undefined };
    const served = this.rounds(scope, orderTargets(scope.route, this.targets, this.random), attempt, counter);
    // Only a route with a last resort has anything to do with a failure: the others pass it on as it is.
    return scope.route.degraded === null ? served : this.orDegraded(scope, served, attempt, staticAnswer, counter);
  }

  private async orDegraded<T>(
    scope: RequestScope,
    served: Promise<Served<T>>,
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    staticAnswer: ((answer: string) => T) | undefined,
    counter: RequestProgress,
  ): Promise<Served<T>> {
    try {
      return await served;
    } catch (err) {
      const { degraded } = scope.route;
      if (degraded === null || !(err instanceof KeymeshError) || !DEGRADABLE_REASONS.has(err.reason)) throw err;
      if (degraded.kind === 'answer') {
        if (staticAnswer === undefined) throw err;
        return { value: staticAnswer(degraded.answer), target: DEGRADED_ANSWER_TARGET, keyId: '', attempts: counter.attempts, degraded: 'answer' };
      }
      if (scope.signal.aborted) throw err;
      try {
        const served = await this.round(scope, [degraded.target], attempt, counter);
        return { ...served, degraded: 'target' };
      } catch (degradedErr) {
        // The caller hears why the route failed, not why its last resort did too.
        this.deps.logger.warn('degraded target failed too', { route: scope.route.alias, error: degradedErr as Error });
        throw err;
      }
    }
  }

  private async rounds<T>(
    scope: RequestScope,
    targets: readonly PolicyTarget[],
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    counter: RequestProgress,
  ): Promise<Served<T>> {
    const { rounds, backoffMs } = scope.route.retry;
    for (let round = 1; ; round++) {
      try {
        return await this.round(scope, targets, attempt, counter);
      } catch (err) {
        // No slot is held while waiting for a turn or a retry.
        this.releaseHold(scope);
        if (scope.route.maxWaitMs > 0 && err instanceof KeymeshError && err.reason === Reason.KEY_POOL_EXHAUSTED && !breakerRefusals.has(err)) {
          // Every key is momentarily full: wait in line for a turn rather than fail
          // (a turn spends no retry round), within max_wait and the deadline.
          const ticket = this.tickets.get(scope) ?? this.joinLine(scope, err);
          if (await ticket.next(err.retryAfterMs)) {
            this.throwIfDone(scope);
            round--;
            continue;
          }
          this.tickets.delete(scope);
          throw this.turnedAway(scope, err, ticket.retryAfterMs());
        }
        if (!(err instanceof KeymeshError) || !RETRIABLE_REASONS.has(err.reason) || round >= rounds || breakerRefusals.has(err)) throw err;
        // The provider's (or limiter's) retry-after when there is one; else
        // exponential backoff with full jitter, so retries from many callers spread out.
        const waitMs = err.retryAfterMs ?? Math.random() * Math.min(backoffMs * 2 ** (round - 1), MAX_BACKOFF_MS);
        if (Date.now() + waitMs >= scope.deadlineMs) throw err;
        await sleep(waitMs, scope.signal);
        this.throwIfDone(scope);
      }
    }
  }

  /**
   * One pass over the targets, admitted first on the request's tenant and
   * route when they have limits of their own. Their slots are taken once per
   * request, kept once a provider was called, and given back after a round
   * that called none (its keys were all full), so the next round or turn in
   * line asks again.
   */
  private round<T>(
    scope: RequestScope,
    targets: readonly PolicyTarget[],
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    counter: RequestProgress,
  ): Promise<Served<T>> {
    // A request holds scope slots only once a round called a provider (see scopedRound).
    if (counter.scopeSlots !== undefined) return this.scopedRound(scope, targets, attempt, counter, NO_GATES);
    if (counter.attempts === 0) {
      const { tenants, routes, tenantCosts, routeCosts } = this.deps.table().scopes;
      const tenant = tenants.size === 0 ? undefined : tenants.get(scope.tenantId);
      const route = routes.size === 0 ? undefined : routes.get(scope.route.alias);
      const tenantCost = tenantCosts.size === 0 ? undefined : tenantCosts.get(scope.tenantId);
      const routeCost = routeCosts.size === 0 ? undefined : routeCosts.get(scope.route.alias);
      if (tenant !== undefined || route !== undefined || tenantCost !== undefined || routeCost !== undefined) {
        return this.scopedRound(scope, targets, attempt, counter, [tenant, route, tenantCost, routeCost]);
      }
    }
    return this.roundOverTargets(scope, targets, attempt, counter);
  }

  private async scopedRound<T>(
    scope: RequestScope,
    targets: readonly PolicyTarget[],
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    counter: RequestProgress,
    gates: readonly (ScopeGate | undefined)[],
  ): Promise<Served<T>> {
    counter.scopeSlots ??= await this.admitScopes(scope, gates);
    try {
      const served = await this.roundOverTargets(scope, targets, attempt, counter);
      for (const slot of counter.scopeSlots) this.scopes.reserve(scope.tokens, slot);
      return served;
    } finally {
      if (counter.attempts === 0) {
        for (const slot of counter.scopeSlots) this.scopes.giveBack(slot);
        counter.scopeSlots = undefined;
      }
    }
  }

  /**
   * A slot on the tenant, then on the route, then on their cost quotas; a
   * denial gives back what was taken and is the caller's 429.
   */
  private async admitScopes(scope: RequestScope, gates: readonly (ScopeGate | undefined)[]): Promise<ScopeSlot[]> {
    const slots: ScopeSlot[] = [];
    try {
      for (const gate of gates) {
        if (gate === undefined) continue;
        const slot = await this.takeScope(scope, gate, gate.measure === 'cost' ? highestPriceOf(scope.route) : null);
        if (!isScopeSlot(slot)) throw scopeDenied(gate, slot);
        slots.push(slot);
      }
      return slots;
    } catch (err) {
      for (const slot of slots) this.scopes.giveBack(slot);
      throw err;
    }
  }

  /** One pass over the targets, each key of each until one serves. */
  private async roundOverTargets<T>(
    scope: RequestScope,
    targets: readonly PolicyTarget[],
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    counter: RequestProgress,
  ): Promise<Served<T>> {
    const { tracer } = this.deps.telemetry;
    let soonestRetryMs: number | undefined;
    let denied = false;
    let lastFailure: ProviderFailure | undefined;
    let lastDenialReason: string | undefined;
    // Set when the last denial was a pool's total rather than its keys.
    let deniedByTotal: ScopeGate | undefined;
    // Targets with a provider, and those of them no call went to because a breaker was open.
    let targetsTried = 0;
    let targetsBroken = 0;
    let soonestBreaker: CircuitBreaker | undefined;
    const breakerRefused = (target: PolicyTarget, breaker: CircuitBreaker, keyId: string | undefined): void => {
      this.breakerSkipped(scope, target, breaker, keyId);
      const nowMs = Date.now();
      if (soonestBreaker === undefined || breaker.retryAfterMs(nowMs) < soonestBreaker.retryAfterMs(nowMs)) soonestBreaker = breaker;
    };

    // One policy for the whole round, read once.
    const table = this.deps.table();
    for (const target of targets) {
      const provider = table.providers.get(target.providerId);
      if (!provider) continue;
      targetsTried++;
      const providerBreaker = this.breakers.provider(provider.id);
      // A provider that is down is not worth a key admission, let alone a timeout per key.
      if (providerBreaker.blocks(Date.now())) {
        breakerRefused(target, providerBreaker, undefined);
        targetsBroken++;
        continue;
      }
      const excluded: string[] = [];
      let called = false;
      let broken = false;
      // The pool's total (and its cost quota), when it has one, is admitted before a key and counts each call made.
      const poolTotal = table.scopes.pools.get(target.poolId);
      const poolCost = table.scopes.poolCosts.get(target.poolId);
      let totalSlot: ScopeSlot | undefined;
      let costSlot: ScopeSlot | undefined;
      try {
        for (;;) {
          this.throwIfDone(scope);
          // The key this request failed on gets its slot back before another key is asked for.
          this.releaseHold(scope);
          let admission: Admission | undefined;
          let deniedGate: ScopeGate | undefined;
          // A pool slot no call spent serves the next key as well.
          if (poolTotal !== undefined && totalSlot === undefined) {
            const taken = await this.takeScope(scope, poolTotal, null);
            if (isScopeSlot(taken)) totalSlot = taken;
            else [admission, deniedGate] = [taken, poolTotal];
          }
          if (poolCost !== undefined && costSlot === undefined && admission === undefined) {
            const taken = await this.takeScope(scope, poolCost, target.price);
            if (isScopeSlot(taken)) costSlot = taken;
            else [admission, deniedGate] = [taken, poolCost];
          }
          if (admission === undefined) {
            // Mostly granted at once from a lease: no await (a microtask and a promise) for those.
            const admitted = this.admit(scope, target, excluded, table);
            admission = admitted instanceof Promise ? await admitted : admitted;
          }
          if (!admission.granted) {
            denied = true;
            lastDenialReason = admission.reason;
            deniedByTotal = deniedGate;
            if (admission.retryAfterMs !== undefined) {
              soonestRetryMs = soonestRetryMs === undefined ? admission.retryAfterMs : Math.min(soonestRetryMs, admission.retryAfterMs);
            }
            break;
          }
          const { keyId } = admission;
          const keyBreaker = this.breakers.key(target.poolId, keyId);
          if (keyBreaker.blocks(Date.now())) {
            // The slot admitted for this key simply goes unused; another key may serve.
            this.keyBroken(target.poolId, keyId, keyBreaker);
            breakerRefused(target, keyBreaker, keyId);
            broken = true;
            excluded.push(keyId);
            continue;
          }
          const fetched = this.deps.keys.secretOf(target.poolId, keyId, scope.traceContext);
          const secret = fetched instanceof Promise ? await this.untilDone(scope, fetched) : fetched;
          if (secret === undefined) {
            // The vault has no usable secret (e.g. its env var is unset): as good as revoked.
            this.deps.logger.warn('key has no secret in the key-vault; skipping it', { keyId, poolId: target.poolId });
            excluded.push(keyId);
            continue;
          }
          // Taken only now, with nothing left to throw before the call, so that a probe is always given back.
          const keyPermit = keyBreaker.acquire(Date.now());
          const providerPermit = keyPermit === Permit.Denied ? Permit.Denied : providerBreaker.acquire(Date.now());
          if (providerPermit === Permit.Denied) {
            // Another request took the probe, or opened the provider's breaker, while this one was admitted.
            keyBreaker.release(keyPermit);
            const refusedBy = keyPermit === Permit.Denied ? keyBreaker : providerBreaker;
            breakerRefused(target, refusedBy, refusedBy === keyBreaker ? keyId : undefined);
            broken = true;
            if (refusedBy === keyBreaker) {
              excluded.push(keyId);
              continue;
            }
            break;
          }
          // A key whose limit nobody stated yet takes one request until it answers
          // (the gate comes last, so nothing between it and the call can leave a probe unsettled).
          const gate = this.probes.gate(target.poolId, keyId);
          let answer: GateAnswer | undefined;
          if (typeof gate !== 'string') {
            try {
              // A probe's answer is normally quick; a request does not wait for it past its own end.
              // One that left and was then handed the probe gives it up at once, so the next waiter probes.
              answer = await this.untilDone(scope, gate, (late) => late.kind === 'probe' && this.probes.settle(target.poolId, keyId, undefined, false));
            } catch (err) {
              keyBreaker.release(keyPermit);
              providerBreaker.release(providerPermit);
              throw err;
            }
          }
          const isProbe = gate === 'probe' || answer?.kind === 'probe';
          if (answer !== undefined && answer.kind !== 'go' && answer.kind !== 'probe') {
            keyBreaker.release(keyPermit);
            providerBreaker.release(providerPermit);
            // Granted before the limiter knew the key's limit: ask it again, now that it knows.
            if (answer.kind === 'readmit') continue;
            // Full by the probe's own count: like a 429 nobody had to earn.
            soonestRetryMs = soonestRetryMs === undefined ? answer.retryAfterMs : Math.min(soonestRetryMs, answer.retryAfterMs);
            denied = true;
            excluded.push(keyId);
            continue;
          }
          called = true;
          // Spent: the pool's total counts this call whatever its outcome.
          const spentTotal = totalSlot;
          const spentCost = costSlot;
          totalSlot = undefined;
          costSlot = undefined;
          const attempts = ++counter.attempts;
          const span = tracer.startSpan(`chat ${target.model}`, {
            kind: SpanKind.CLIENT,
            attributes: {
              [attr.KEYMESH_COMPONENT]: 'provider',
              [attr.KEYMESH_PROVIDER_ID]: provider.id,
              [attr.KEYMESH_POOL_ID]: target.poolId,
              [attr.KEYMESH_KEY_ID]: keyId,
              [attr.KEYMESH_ATTEMPT]: attempts,
              [attr.GEN_AI_REQUEST_MODEL]: target.model,
            },
          }, scope.traceContext);
          if (keyPermit === Permit.Probe || providerPermit === Permit.Probe) span.setAttribute(KEYMESH_BREAKER_STATE, 'half_open');
          let result: AttemptResult<T>;
          const stats = this.targets.of(target);
          this.targets.began(stats);
          const callStartedMs = Date.now();
          // Only answers and timeouts say how fast the target is; a quick refusal would flatter it.
          let ttfbMs: number | undefined;
          const signal = attemptSignal(scope, provider.timeoutMs);
          try {
            result = await attempt({ target, provider, keyId, secret, number: attempts, signal, requestSignal: scope.signal, span });
            if (result.ok) ttfbMs = Date.now() - callStartedMs;
          } catch (err) {
            span.setStatus({ code: SpanStatusCode.ERROR });
            span.end();
            if (scope.signal.aborted || err instanceof KeymeshError) {
              // Not the provider's doing: the breakers learn nothing, but get their probes back.
              keyBreaker.release(keyPermit);
              providerBreaker.release(providerPermit);
              if (isProbe) this.probes.settle(target.poolId, keyId, undefined, false);
              this.throwIfDone(scope);
              throw err;
            }
            // Refused, reset, or silent past the provider's timeout: the provider, not the key, is unwell.
            const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
            if (timedOut) ttfbMs = Date.now() - callStartedMs;
            result = {
              ok: false,
              failure: {
                kind: 'unavailable',
                status: timedOut ? 504 : 502,
                message: timedOut ? 'the provider did not answer in time' : 'the provider could not be reached',
                retryAfterMs: undefined,
              },
            };
            this.deps.logger.warn('provider call failed', { providerId: provider.id, timedOut, error: err as Error });
          } finally {
            if (signal instanceof AttemptCancellation) signal.end();
            this.targets.ended(stats, ttfbMs);
          }
          const nowMs = Date.now();
          let limits = result.limits;
          if (isProbe) {
            limits = this.probes.settle(target.poolId, keyId, limits, limits !== undefined);
            // Slots leased before the limiter knew the key's limit are in no window: drop them, and those of grants in flight.
            if (limits !== undefined) this.deps.admission.limitLearned(target.poolId, keyId);
          }
          const learned = this.learnLimits(target, keyId, limits, nowMs);
          let reported: Promise<void> | undefined;
          if (result.ok) {
            keyBreaker.succeeded(keyPermit, nowMs);
            providerBreaker.succeeded(providerPermit, nowMs);
            span.end();
            if (result.spentUntilMs !== undefined) reported = this.keySpent(scope, target, keyId, result.spentUntilMs, learned);
            // A 2xx with no retry-after only teaches the limiter; it cools nothing.
            else if (learned !== undefined) reported = this.report(scope, target, keyId, { kind: 'rate_limited', status: 200, message: '', retryAfterMs: undefined }, learned);
            if (isProbe && limits !== undefined) this.confirmProbe(target, keyId, reported);
            // Failed attempts keep their reservations: the provider may have counted them, so giving them back could overrun it.
            if (admission.admissionId !== undefined && scope.tokens !== undefined) {
              scope.tokens.reservation = { poolId: target.poolId, keyId, admissionId: admission.admissionId, reservedTokens: scope.tokens.estimated(scope.route.defaultMaxTokens) };
            }
            if (spentTotal !== undefined) this.scopes.reserve(scope.tokens, spentTotal);
            if (spentCost !== undefined) this.scopes.reserve(scope.tokens, spentCost);
            if (scope.tokens !== undefined) scope.tokens.servedPrice = target.price;
            return { value: result.value, target, keyId, attempts };
          }
          const failure = result.failure;
          keyBreaker.failed(keyPermit, failure.kind, nowMs);
          providerBreaker.failed(providerPermit, failure.kind, nowMs);
          if (keyBreaker.state === 'open') this.keyBroken(target.poolId, keyId, keyBreaker);
          lastFailure = failure;
          span.setAttribute(attr.HTTP_RESPONSE_STATUS_CODE, failure.status);
          span.setAttribute(attr.KEYMESH_RETRY_REASON, failure.kind);
          span.setStatus({ code: SpanStatusCode.ERROR, message: failure.kind });
          span.end();
          // A rejected request is the caller's mistake, not the key's: the key stays in service.
          if (failure.kind !== 'unavailable' && failure.kind !== 'rejected') {
            // A spent quota rests until its period ends, which the limiter knows: this router only
            // stops asking for a while. A revoked key (401/403) stays out until the policy changes.
            const untilMs =
              failure.kind === 'rate_limited'
                ? Date.now() + (failure.retryAfterMs ?? 1_000)
                : failure.kind === 'quota_exhausted'
                  ? Date.now() + QUOTA_RECHECK_MS
                  : Number.POSITIVE_INFINITY;
            this.deps.admission.forgetKey(target.poolId, keyId, untilMs);
            reported = this.report(scope, target, keyId, failure, learned);
            await reported;
          } else if (learned !== undefined) {
            reported = this.report(scope, target, keyId, failure, learned);
          }
          // A probe's answer is an answer whatever it said: the requests waiting on it are let go.
          if (isProbe && limits !== undefined) this.confirmProbe(target, keyId, reported);
          if (failure.kind === 'rejected') {
            throw new KeymeshError({
              code: failure.status === 404 ? Code.NotFound : Code.InvalidArgument,
              reason: Reason.PROVIDER_REJECTED,
              message: failure.message,
              upstreamStatus: failure.status,
              // SDK users branch on the provider's code (context_length_exceeded) and param.
              metadata: { ...(failure.code === undefined ? {} : { provider_code: failure.code }), ...(failure.param === undefined ? {} : { param: failure.param }) },
            });
          }
          if (failure.kind === 'rate_limited') {
            // Keys this request excluded after a 429 are full, not gone: the caller
            // hears "retry after", not "unavailable", when nothing else serves.
            const retryMs = failure.retryAfterMs ?? 1_000;
            soonestRetryMs = soonestRetryMs === undefined ? retryMs : Math.min(soonestRetryMs, retryMs);
          }
          excluded.push(keyId);
          // This failure may have opened the provider's breaker: the next key would be refused anyway.
          if (providerBreaker.blocks(Date.now())) break;
        }
      } finally {
        // What no call spent goes back: no key served, or the request ended while it waited.
        if (totalSlot !== undefined) this.scopes.giveBack(totalSlot);
        if (costSlot !== undefined) this.scopes.giveBack(costSlot);
      }
      if (broken && !called) targetsBroken++;
    }

    if (soonestBreaker !== undefined && targetsBroken === targetsTried) {
      const err = new KeymeshError({
        code: Code.Unavailable,
        reason: Reason.PROVIDER_UNAVAILABLE,
        message: `every target of route "${scope.route.alias}" is behind an open circuit breaker; not calling it until it half-opens`,
        // At least 1 ms: a breaker whose probe is in flight knows no better time than "soon".
        retryAfterMs: Math.max(1, soonestBreaker.retryAfterMs(Date.now())),
        metadata: { route: scope.route.alias },
      });
      breakerRefusals.add(err);
      throw err;
    }

    if (denied && (lastFailure === undefined || lastFailure.kind !== 'unavailable')) {
      const parkedOnly = lastDenialReason === Reason.KEY_POOL_UNAVAILABLE && soonestRetryMs === undefined;
      throw new KeymeshError({
        code: parkedOnly ? Code.Unavailable : Code.ResourceExhausted,
        reason: parkedOnly ? Reason.KEY_POOL_UNAVAILABLE : Reason.KEY_POOL_EXHAUSTED,
        message: parkedOnly
          ? `no key of route "${scope.route.alias}" is usable right now`
          : deniedByTotal !== undefined
            ? scopeMessage(deniedByTotal, soonestRetryMs)
            : `every key of route "${scope.route.alias}" is at its limit; retry later`,
        ...(soonestRetryMs === undefined ? {} : { retryAfterMs: soonestRetryMs }),
        metadata: deniedByTotal === undefined ? { route: scope.route.alias } : { route: scope.route.alias, scope: 'pool', pool: deniedByTotal.id },
      });
    }
    throw new KeymeshError({
      code: Code.Unavailable,
      reason: Reason.PROVIDER_UNAVAILABLE,
      message: `no provider of route "${scope.route.alias}" answered`,
      metadata: { route: scope.route.alias },
      ...(lastFailure?.retryAfterMs === undefined ? {} : { retryAfterMs: lastFailure.retryAfterMs }),
    });
  }

  private takeScope(scope: RequestScope, gate: ScopeGate, price: TokenPrice | null): ScopeSlot | ScopeDenial | Promise<ScopeSlot | ScopeDenial> {
    const taken = this.scopes.take(gate, scope, price);
    return taken instanceof Promise ? this.untilDone(scope, taken, (late) => isScopeSlot(late) && this.scopes.giveBack(late)) : taken;
  }

  /**
   * A key whose breaker is open is not worth admitting: admission stops
   * handing it out until the breaker half-opens, instead of each request
   * taking its leased slot, finding the breaker open and paying an exact
   * Acquire for another key. The limiter is not told: breakers are this
   * replica's view, and its half-open probe must still be able to get the key.
   */
  private keyBroken(poolId: string, keyId: string, breaker: CircuitBreaker): void {
    if (breaker.state === 'open') this.deps.admission.forgetKey(poolId, keyId, breaker.openUntilMs);
  }

  /** Joins the route's line, bounded by min(max_wait from now, the deadline); a full line turns the request away at once. */
  private joinLine(scope: RequestScope, denial: KeymeshError | undefined): WaitTicket {
    const line = scope.route.alias;
    const ticket = this.waits.join(line, scope.priority ?? 'normal', Math.min(Date.now() + scope.route.maxWaitMs, scope.deadlineMs));
    if (ticket === undefined) throw this.turnedAway(scope, denial, denial?.retryAfterMs ?? this.waits.retryAfterMs(line));
    this.tickets.set(scope, ticket);
    return ticket;
  }

  private leaveLine(scope: RequestScope, admitted: boolean): void {
    const ticket = this.tickets.get(scope);
    if (ticket === undefined) return;
    this.tickets.delete(scope);
    ticket.leave(admitted);
  }

  /** The caller's 429 after waiting as long as it may (or finding the line full), with when to come back. */
  private turnedAway(scope: RequestScope, denial: KeymeshError | undefined, retryAfterMs: number): KeymeshError {
    this.throwIfDone(scope);
    return new KeymeshError({
      code: Code.ResourceExhausted,
      reason: Reason.KEY_POOL_EXHAUSTED,
      message: denial?.message ?? `every key of route "${scope.route.alias}" is at its limit; retry later`,
      retryAfterMs: Math.max(1, retryAfterMs),
      metadata: { route: scope.route.alias },
    });
  }

  /** A call not made because a breaker is open: a span of its own says which and why. */
  private breakerSkipped(scope: RequestScope, target: PolicyTarget, breaker: CircuitBreaker, keyId: string | undefined): void {
    const span = this.deps.telemetry.tracer.startSpan(`chat ${target.model}`, {
      kind: SpanKind.CLIENT,
      attributes: {
        [attr.KEYMESH_COMPONENT]: 'provider',
        [attr.KEYMESH_PROVIDER_ID]: target.providerId,
        [attr.KEYMESH_POOL_ID]: target.poolId,
        ...(keyId === undefined ? {} : { [attr.KEYMESH_KEY_ID]: keyId }),
        [attr.GEN_AI_REQUEST_MODEL]: target.model,
        [attr.KEYMESH_RETRY_REASON]: 'breaker_open',
        [KEYMESH_BREAKER_STATE]: breaker.state,
      },
    }, scope.traceContext);
    span.setStatus({ code: SpanStatusCode.ERROR, message: `circuit breaker ${breaker.id} is ${breaker.state} (${breaker.reason ?? 'probing'})` });
    span.end();
  }

  /**
   * Admission is mostly served from this router's leases, so it gets no span of
   * its own: the route span links to the limiter call that granted the slot.
   */
  private admit(scope: RequestScope, target: PolicyTarget, excluded: string[], table: RouteTable) {
    const route = trace.getSpan(scope.traceContext);
    // Tokenized only for pools with token limits: everywhere else admission stays a slot count.
    const estimatedTokens = table.tokenLimitedPools.has(target.poolId) ? (scope.tokens?.estimated(scope.route.defaultMaxTokens) ?? 0) : undefined;
    const high = scope.priority === 'high';
    const admission = this.admitted(
      scope,
      table.heldPools.has(target.poolId)
        ? this.holding(scope, target.poolId, this.deps.admission.admitExact(target.poolId, excluded, scope.requestId, scope.deadlineMs, scope.traceContext, estimatedTokens, high))
        : this.deps.admission.admit(target.poolId, excluded, scope.requestId, scope.deadlineMs, scope.traceContext, estimatedTokens, high),
    );
    if (admission instanceof Promise) {
      // A lease grant may outlast the caller's deadline (it has its own timeout); the caller must not wait for it,
      // and what it grants after the caller left goes back (a hold is given back by `holding`).
      const giveBackLate = (late: Admission): void => this.scopes.release(target.poolId, late, estimatedTokens ?? 0);
      return this.untilDone(scope, admission, giveBackLate).then((a) => {
        route?.addLink({ context: a.decidedBy });
        return a;
      });
    }
    if (!route) return admission;
    route.addLink({ context: admission.decidedBy });
    return admission;
  }

  /**
   * Keeps the hold a grant on a capped key took. Kept even when the grant
   * arrives after the caller stopped waiting (deadline, hang-up): the hold
   * keeper then gives it back at once rather than leave it to its TTL.
   */
  private holding(scope: RequestScope, poolId: string, admission: Promise<Admission>): Promise<Admission> {
    return admission.then((a) => {
      if (a.granted && a.hold !== undefined) scope.hold = this.holds.hold(poolId, a.keyId, a.hold.holdId, a.hold.ttlMs, scope.signal);
      return a;
    });
  }

  /** A request admitted while holding the line's turn hands it on at once: the capacity that served it may serve the next. */
  private admitted(scope: RequestScope, admission: Admission | Promise<Admission>): Admission | Promise<Admission> {
    if (!this.tickets.has(scope)) return admission;
    if (admission instanceof Promise) {
      return admission.then((a) => {
        if (a.granted) this.leaveLine(scope, true);
        return a;
      });
    }
    if (admission.granted) this.leaveLine(scope, true);
    return admission;
  }

  /**
   * The provider answered, and its headers say this key has no requests (or
   * tokens) left until its reset: stop sending to it now rather than learn it
   * from a 429. The limiter cools it for every router.
   */
  private keySpent(scope: RequestScope, target: PolicyTarget, keyId: string, untilMs: number, learned: LimitReport | undefined): Promise<void> {
    this.deps.admission.forgetKey(target.poolId, keyId, untilMs);
    const failure: ProviderFailure = { kind: 'rate_limited', status: 200, message: 'provider reported nothing left', retryAfterMs: Math.max(0, untilMs - Date.now()) };
    return this.report(scope, target, keyId, failure, learned);
  }

  /** The key is known once the limiter has heard its probe's answer (report never rejects). */
  private confirmProbe(target: PolicyTarget, keyId: string, reported: Promise<void> | undefined): void {
    if (reported === undefined) this.probes.confirm(target.poolId, keyId);
    else void reported.then(() => this.probes.confirm(target.poolId, keyId));
  }

  /**
   * Follows the provider's headers for a key: this router stops spending
   * leased slots the provider says it no longer has, and the limiter hears
   * the key's limit the first time and its remaining count near the end of a
   * window (the answer says what to report, if anything).
   */
  private learnLimits(target: PolicyTarget, keyId: string, limits: LimitSnapshot | undefined, nowMs: number): LimitReport | undefined {
    if (limits === undefined) return undefined;
    if (limits.remainingRequests !== undefined) this.deps.admission.capKey(target.poolId, keyId, limits.remainingRequests);
    return this.learner.observe(target.poolId, keyId, limits, nowMs);
  }

  private async report(scope: RequestScope, target: PolicyTarget, keyId: string, failure: ProviderFailure, learned?: LimitReport): Promise<void> {
    try {
      await this.deps.limiter.reportOutcome(
        {
          poolId: target.poolId,
          keyId,
          httpStatus: failure.status,
          ...(failure.retryAfterMs === undefined ? {} : { retryAfter: durationOfMs(failure.retryAfterMs) }),
          ...(learned?.learnedLimit === undefined
            ? {}
            : { learnedLimitRequests: learned.learnedLimit.requests, learnedWindow: durationOfMs(learned.learnedLimit.perMs) }),
          ...(learned?.remainingRequests === undefined ? {} : { remainingRequests: learned.remainingRequests }),
          ...(failure.kind === 'quota_exhausted' ? { quotaExhausted: true } : {}),
        },
        { deadlineMs: scope.deadlineMs, parent: scope.traceContext },
      );
    } catch (err) {
      // The key is excluded for this request anyway; other requests may still try it.
      this.deps.logger.warn('could not report a key outcome to the limiter', { keyId, error: err as Error });
    }
  }

  /**
   * Settles with `work`, or rejects the moment the request is done (deadline,
   * caller gone). The work itself runs on: what it brings after that goes to
   * `onLate` (a grant to give back), or is simply unused.
   */
  private untilDone<T>(scope: RequestScope, work: Promise<T>, onLate?: (value: T) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let left = false;
      const onDone = (): void => {
        left = true;
        try {
          this.throwIfDone(scope);
        } catch (err) {
          reject(err);
        }
      };
      if (scope.signal.aborted) {
        void work.then(onLate, () => undefined);
        return onDone();
      }
      scope.signal.addEventListener('abort', onDone, { once: true });
      work.then(
        (value) => {
          scope.signal.removeEventListener('abort', onDone);
          if (left) onLate?.(value);
          else resolve(value);
        },
        (err: unknown) => {
          scope.signal.removeEventListener('abort', onDone);
          reject(err);
        },
      );
    });
  }

  private throwIfDone(scope: RequestScope): void {
    if (!scope.signal.aborted) return;
    const reason: unknown = scope.signal.reason;
    if (reason instanceof KeymeshError) throw reason;
    throw new KeymeshError({ code: Code.DeadlineExceeded, reason: Reason.DEADLINE_EXCEEDED, message: 'the request deadline passed' });
  }
}

