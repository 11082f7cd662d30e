import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { AcquireBatchResponseSchema, GrantLeasesResponseSchema, type LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import { createLogger, createTelemetry } from '@keymesh/telemetry';
import { KeymeshError, openAiErrorBody } from '@keymesh/errors';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { AcquireBatcher } from '../admission/acquire-batcher';
import { LeaseAdmission } from '../admission/lease-admission';
import type { KeyMaterialCache } from '../keys/key-material';
import type { LimitSnapshot } from '../providers';
import { RequestCancellation } from './cancellation';
import { Dispatcher, type AttemptResult, type RequestScope } from './dispatcher';
import { EMPTY_ROUTE_TABLE, type ProviderBinding, type RouteTable } from './route-table';

const telemetry = createTelemetry('key-probe-dispatch-test');

/** One key, k1, whose limit the config does not state: its first request probes it. */
function probingDispatcher(): Dispatcher {
  const limiter = {
    grantLeases: async () => create(GrantLeasesResponseSchema, { pools: [{ poolId: 'main', leases: [{ keyId: 'k1', slots: 1_000 }] }] }),
    acquireBatch: async () => create(AcquireBatchResponseSchema, { responses: [] }),
    reportOutcome: async () => ({}),
  } as unknown as RpcClient<typeof LimiterService>;
  const admission = new LeaseAdmission(limiter, telemetry, new AcquireBatcher(limiter, telemetry), { holdMs: 60_000 });
  const provider = { id: 'mock', timeoutMs: 60_000 } as unknown as ProviderBinding;
  const table: RouteTable = { ...EMPTY_ROUTE_TABLE, providers: new Map([['mock', provider]]) };
  const keys = { secretOf: () => 'secret' } as unknown as KeyMaterialCache;
  return new Dispatcher({ table: () => table, admission, keys, limiter, telemetry, logger: createLogger('test', 'error') });
}

/** A request with its own deadline, which ends it as the HTTP edge's timer does. */
function scope(id: string, timeoutMs: number): RequestScope {
  const signal = new RequestCancellation();
  setTimeout(() => signal.abort(new Error(`${id}: deadline`)), timeoutMs).unref();
  return {
    requestId: id,
    tenantId: 't',
    route: { alias: 'r', strategy: 'fallback', targets: [{ poolId: 'main', providerId: 'mock', model: 'm', weight: null, price: null }], degraded: null, defaultMaxTokens: 256, maxWaitMs: 0, limits: null, cacheTtlMs: null, timeoutMs, retry: { rounds: 1, backoffMs: 10 }, maxConcurrency: null },
    deadlineMs: Date.now() + timeoutMs,
    signal,
    traceContext: ROOT_CONTEXT,
  };
}

const LIMITS: LimitSnapshot = {
  limitRequests: 100, remainingRequests: 99, requestsResetAtMs: Date.now() + 60_000,
  limitTokens: undefined, remainingTokens: undefined, tokensResetAtMs: undefined, inputTokens: undefined, outputTokens: undefined, retryAfterMs: undefined,
};

const served = async (): Promise<AttemptResult<string>> => ({ ok: true, value: 'answer', limits: LIMITS });

/** How `work` ended, or that it had not within `ms`. */
function within<T>(work: Promise<T>, ms: number): Promise<T | Error | 'still running'> {
  return Promise.race([work.catch((err: unknown) => err as Error), new Promise<'still running'>((resolve) => setTimeout(resolve, ms, 'still running'))]);
}

describe('probing a key whose limit is not stated', () => {
  it('keeps the key in service when the probe request is rejected as malformed (400)', async () => {
    const dispatcher = probingDispatcher();
    const rejected = async (): Promise<AttemptResult<string>> => ({ ok: false, failure: { kind: 'rejected', status: 400, message: 'bad request', retryAfterMs: undefined }, limits: LIMITS });
    await assert.rejects(dispatcher.run(scope('bad', 1_000), rejected), /bad request/);

    const next = await within(dispatcher.run(scope('next', 1_000), served), 2_000);
    assert.equal(typeof next === 'object' && 'keyId' in next ? next.keyId : String(next), 'k1');
  });

  it('hands the probe on to a waiter when the probe got no answer, and the key keeps serving after', async () => {
    const dispatcher = probingDispatcher();
    let failProbe: (err: Error) => void = () => undefined;
    const unanswered = (): Promise<AttemptResult<string>> => new Promise((_, reject) => (failProbe = reject));
    const probe = dispatcher.run(scope('probe', 5_000), unanswered);
    // Waits for the probe's answer, then goes as the probe in its place.
    const waiter = dispatcher.run(scope('waiter', 5_000), served);
    await new Promise((resolve) => setImmediate(resolve));
    failProbe(new Error('connect ECONNREFUSED'));
    await assert.rejects(probe);
    assert.equal((await waiter).keyId, 'k1');

    const later = await within(dispatcher.run(scope('later', 1_000), served), 2_000);
    assert.equal(typeof later === 'object' && 'keyId' in later ? later.keyId : String(later), 'k1');
  });

  it('does not keep a request waiting for a probe past its own deadline', async () => {
    const dispatcher = probingDispatcher();
    const hanging = (): Promise<AttemptResult<string>> => new Promise(() => undefined);
    void dispatcher.run(scope('probe', 60_000), hanging).catch(() => undefined);
    await new Promise((resolve) => setImmediate(resolve));
    const startedMs = Date.now();
    const waiter = await within(dispatcher.run(scope('waiter', 200), served), 2_000);
    assert.ok(waiter instanceof Error, String(waiter));
    assert.ok(Date.now() - startedMs < 1_500);
  });

  it("passes a rejected request's provider code and param on to the caller's error body", async () => {
    const dispatcher = probingDispatcher();
    const rejected = async (): Promise<AttemptResult<string>> => ({
      ok: false,
      failure: { kind: 'rejected', status: 400, message: 'too long', retryAfterMs: undefined, code: 'context_length_exceeded', param: 'messages' },
      limits: LIMITS,
    });
    const err = await dispatcher.run(scope('long', 1_000), rejected).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof KeymeshError);
    assert.deepEqual(openAiErrorBody(err, err.metadata.param ?? null).error, { message: 'too long', type: 'invalid_request_error', param: 'messages', code: 'context_length_exceeded' });
  });
});
