import type { PolicyRoute, PolicyTarget } from '@keymesh/config';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import { attr, type Logger, type Telemetry } from '@keymesh/telemetry';
import { SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api';
import type { LeaseAdmission } from '../admission/lease-admission';
import type { RequestTokens } from '../admission/request-tokens';
import type { KeyMaterialCache } from '../keys/key-material';
import type { ProviderFailure } from '../providers';
import { BreakerBoard, Permit, type CircuitBreaker } from '../resilience';
import type { ProviderBinding, RouteTable } from './route-table';
import { orderTargets, TargetBoard } from './strategy';

/** One client request as the dispatcher sees it. */
export interface RequestScope {
  readonly requestId: string;
  readonly tenantId: string;
  readonly route: PolicyRoute;
  readonly deadlineMs: number;
  /** Aborted when the caller goes away or the deadline passes. */
  readonly signal: AbortSignal;
  /** The request's route span: the parent of everything done for it. */
  readonly traceContext: Context;
  /** Token accounting, for targets whose pool has token limits; none: nothing is reserved. */
  readonly tokens?: RequestTokens;
}

export interface Attempt {
  readonly target: PolicyTarget;
  readonly provider: ProviderBinding;
  readonly keyId: string;
  readonly secret: string;
  /** 1-based. */
  readonly number: number;
  readonly signal: AbortSignal;
  /** The request's own signal (caller gone, deadline), without the provider's per-attempt timeout. */
  readonly requestSignal: AbortSignal;
  readonly span: Span;
}

export type AttemptResult<T> =
  | {
      ok: true;
      value: T;
      /** Set when the provider's headers said the key has nothing left: until when. */
      spentUntilMs?: number;
    }
  | { ok: false; failure: ProviderFailure };

export interface Served<T> {
  readonly value: T;
  readonly target: PolicyTarget;
  readonly keyId: string;
  readonly attempts: number;
  /** Set when the route's last resort served: its degraded target, or its static answer. */
  readonly degraded?: 'target' | 'answer';
}

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
}

/** Failures another round may cure: provider trouble, and keys full until a known time. */
const RETRIABLE_REASONS = new Set<string>([Reason.PROVIDER_UNAVAILABLE, Reason.KEY_POOL_EXHAUSTED, Reason.UNAVAILABLE]);
const MAX_BACKOFF_MS = 10_000;
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

function sleep(ms: number, signal: AbortSignal): Promise<void> {
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
function attemptSignal(scope: RequestScope, providerTimeoutMs: number): AbortSignal {
  if (Date.now() + providerTimeoutMs >= scope.deadlineMs) return scope.signal;
  return AbortSignal.any([scope.signal, AbortSignal.timeout(providerTimeoutMs)]);
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

  constructor(private readonly deps: DispatcherDeps) {
    this.breakers = deps.breakers ?? new BreakerBoard();
    this.targets = deps.targets ?? new TargetBoard();
    this.random = deps.random ?? Math.random;
  }

  /**
   * Serves a request from the route's targets, in the order its strategy
   * gives, with retry rounds; when they all fail because providers could not
   * serve, from the route's degraded target, or its static answer made by
   * `staticAnswer` (left out where no static answer fits, e.g. embeddings).
   */
  async run<T>(
    scope: RequestScope,
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    staticAnswer?: (answer: string) => T,
  ): Promise<Served<T>> {
    const counter = { attempts: 0 };
    try {
      return await this.rounds(scope, orderTargets(scope.route, this.targets, this.random), attempt, counter);
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
    counter: { attempts: number },
  ): Promise<Served<T>> {
    const { rounds, backoffMs } = scope.route.retry;
    for (let round = 1; ; round++) {
      try {
        return await this.round(scope, targets, attempt, counter);
      } catch (err) {
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

  /** One pass over the targets, each key of each until one serves. */
  private async round<T>(
    scope: RequestScope,
    targets: readonly PolicyTarget[],
    attempt: (a: Attempt) => Promise<AttemptResult<T>>,
    counter: { attempts: number },
  ): Promise<Served<T>> {
    const { tracer } = this.deps.telemetry;
    let soonestRetryMs: number | undefined;
    let denied = false;
    let lastFailure: ProviderFailure | undefined;
    let lastDenialReason: string | undefined;
    // Targets with a provider, and those of them no call went to because a breaker was open.
    let targetsTried = 0;
    let targetsBroken = 0;
    let soonestBreaker: CircuitBreaker | undefined;
    const breakerRefused = (target: PolicyTarget, breaker: CircuitBreaker, keyId: string | undefined): void => {
      this.breakerSkipped(scope, target, breaker, keyId);
      const nowMs = Date.now();
      if (soonestBreaker === undefined || breaker.retryAfterMs(nowMs) < soonestBreaker.retryAfterMs(nowMs)) soonestBreaker = breaker;
    };

    for (const target of targets) {
      const provider = this.deps.table().providers.get(target.providerId);
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
      for (;;) {
        this.throwIfDone(scope);
        const admission = await this.admit(scope, target, excluded);
        if (!admission.granted) {
          denied = true;
          lastDenialReason = admission.reason;
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
        const fetched = this.deps.keys.secretOf(target.poolId, keyId, scope.deadlineMs, scope.traceContext);
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
        called = true;
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
        try {
          result = await attempt({ target, provider, keyId, secret, number: attempts, signal: attemptSignal(scope, provider.timeoutMs), requestSignal: scope.signal, span });
          if (result.ok) ttfbMs = Date.now() - callStartedMs;
        } catch (err) {
          span.setStatus({ code: SpanStatusCode.ERROR });
          span.end();
          if (scope.signal.aborted || err instanceof KeymeshError) {
            // Not the provider's doing: the breakers learn nothing, but get their probes back.
            keyBreaker.release(keyPermit);
            providerBreaker.release(providerPermit);
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
          this.targets.ended(stats, ttfbMs);
        }
        const nowMs = Date.now();
        if (result.ok) {
          keyBreaker.succeeded(keyPermit, nowMs);
          providerBreaker.succeeded(providerPermit, nowMs);
          span.end();
          if (result.spentUntilMs !== undefined) this.keySpent(scope, target, keyId, result.spentUntilMs);
          // Failed attempts keep their reservations: the provider may have counted them, so giving them back could overrun it.
          if (admission.admissionId !== undefined && scope.tokens !== undefined) {
            scope.tokens.reservation = { poolId: target.poolId, keyId, admissionId: admission.admissionId, reservedTokens: scope.tokens.estimated(scope.route.defaultMaxTokens) };
          }
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
        if (failure.kind === 'rejected') {
          throw new KeymeshError({
            code: failure.status === 404 ? Code.NotFound : Code.InvalidArgument,
            reason: Reason.PROVIDER_REJECTED,
            message: failure.message,
            upstreamStatus: failure.status,
          });
        }
        if (failure.kind !== 'unavailable') {
          const untilMs = failure.kind === 'rate_limited' ? Date.now() + (failure.retryAfterMs ?? 1_000) : Number.POSITIVE_INFINITY;
          this.deps.admission.forgetKey(target.poolId, keyId, untilMs);
          await this.report(scope, target, keyId, failure);
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
          : `every key of route "${scope.route.alias}" is at its limit; retry later`,
        ...(soonestRetryMs === undefined ? {} : { retryAfterMs: soonestRetryMs }),
        metadata: { route: scope.route.alias },
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
  private admit(scope: RequestScope, target: PolicyTarget, excluded: string[]) {
    const route = trace.getSpan(scope.traceContext);
    // Tokenized only for pools with token limits: everywhere else admission stays a slot count.
    const estimatedTokens = this.deps.table().tokenLimitedPools.has(target.poolId) ? (scope.tokens?.estimated(scope.route.defaultMaxTokens) ?? 0) : undefined;
    const admission = this.deps.admission.admit(target.poolId, excluded, scope.requestId, scope.deadlineMs, scope.traceContext, estimatedTokens);
    if (admission instanceof Promise) {
      // A lease grant may outlast the caller's deadline (it has its own timeout); the caller must not wait for it.
      return this.untilDone(scope, admission).then((a) => {
        route?.addLink({ context: a.decidedBy });
        return a;
      });
    }
    if (!route) return admission;
    route.addLink({ context: admission.decidedBy });
    return admission;
  }

  /**
   * The provider answered, and its headers say this key has no requests (or
   * tokens) left until its reset: stop sending to it now rather than learn it
   * from a 429. The limiter cools it for every router.
   */
  private keySpent(scope: RequestScope, target: PolicyTarget, keyId: string, untilMs: number): void {
    this.deps.admission.forgetKey(target.poolId, keyId, untilMs);
    const failure: ProviderFailure = { kind: 'rate_limited', status: 200, message: 'provider reported nothing left', retryAfterMs: Math.max(0, untilMs - Date.now()) };
    void this.report(scope, target, keyId, failure);
  }

  private async report(scope: RequestScope, target: PolicyTarget, keyId: string, failure: ProviderFailure): Promise<void> {
    try {
      await this.deps.limiter.reportOutcome(
        {
          poolId: target.poolId,
          keyId,
          httpStatus: failure.status,
          ...(failure.retryAfterMs === undefined
            ? {}
            : { retryAfter: { seconds: BigInt(Math.floor(failure.retryAfterMs / 1000)), nanos: Math.round((failure.retryAfterMs % 1000) * 1e6) } }),
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
   * caller gone). The work itself runs on: a slot it brings is simply unused.
   */
  private untilDone<T>(scope: RequestScope, work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const onDone = (): void => {
        try {
          this.throwIfDone(scope);
        } catch (err) {
          reject(err);
        }
      };
      if (scope.signal.aborted) {
        void work.catch(() => undefined);
        return onDone();
      }
      scope.signal.addEventListener('abort', onDone, { once: true });
      work.then(
        (value) => {
          scope.signal.removeEventListener('abort', onDone);
          resolve(value);
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
