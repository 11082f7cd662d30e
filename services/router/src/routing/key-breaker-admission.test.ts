import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import {
  AcquireBatchResponseSchema,
  AcquireOutcome,
  GrantLeasesResponseSchema,
  type AcquireBatchRequest,
  type LimiterService,
} from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import { createLogger, createTelemetry } from '@keymesh/telemetry';
import { INVALID_SPAN_CONTEXT, ROOT_CONTEXT } from '@opentelemetry/api';
import { AcquireBatcher, type Admission } from '../admission/acquire-batcher';
import { RequestTokens } from '../admission/request-tokens';
import { LeaseAdmission } from '../admission/lease-admission';
import { EMPTY_SCOPE_TABLE, type ScopeAdmission, type ScopeGate, type ScopeSlot } from '../admission/scope-admission';
import type { KeyMaterialCache } from '../keys/key-material';
import { BreakerBoard, DEFAULT_BREAKER_OPTIONS, Permit } from '../resilience';
import { Dispatcher, type AttemptResult, type RequestScope } from './dispatcher';
import { EMPTY_ROUTE_TABLE, type ProviderBinding, type RouteTable } from './route-table';

const telemetry = createTelemetry('key-breaker-admission-test');

/** A limiter that leases plenty of both keys, and grants exact Acquires the first key not excluded. */
function fakeLimiter() {
  const acquires: AcquireBatchRequest[] = [];
  const client = {
    grantLeases: async () =>
      create(GrantLeasesResponseSchema, { pools: [{ poolId: 'main', leases: [{ keyId: 'k1', slots: 100 }, { keyId: 'k2', slots: 100 }] }] }),
    acquireBatch: async (request: AcquireBatchRequest) => {
      acquires.push(request);
      return create(AcquireBatchResponseSchema, {
        responses: request.requests.map((r) => ({ outcome: AcquireOutcome.GRANTED, keyId: ['k1', 'k2'].find((k) => !r.excludedKeyIds.includes(k)) ?? '' })),
      });
    },
    reportOutcome: async () => ({}),
  } as unknown as RpcClient<typeof LimiterService>;
  return { client, acquires };
}

function scope(i: number): RequestScope {
  return {
    requestId: `r${i}`,
    tenantId: 't',
    route: { alias: 'r', strategy: 'fallback', targets: [{ poolId: 'main', providerId: 'mock', model: 'm', weight: null, price: null }], degraded: null, defaultMaxTokens: 256, maxWaitMs: 0, limits: null, cacheTtlMs: null, timeoutMs: 5_000, retry: { rounds: 1, backoffMs: 10 }, maxConcurrency: null },
    deadlineMs: Date.now() + 5_000,
    signal: new AbortController().signal,
    traceContext: ROOT_CONTEXT,
  };
}

describe('an open key breaker and admission', () => {
  it('stops admission from handing out a key whose breaker is open, so no request pays for it', async () => {
    const limiter = fakeLimiter();
    const admission = new LeaseAdmission(limiter.client, telemetry, new AcquireBatcher(limiter.client, telemetry), { holdMs: 60_000 });
    const breakers = new BreakerBoard(DEFAULT_BREAKER_OPTIONS);
    const provider = { id: 'mock', timeoutMs: 1_000 } as unknown as ProviderBinding;
    const table: RouteTable = { ...EMPTY_ROUTE_TABLE, providers: new Map([['mock', provider]]) };
    const keys = { secretOf: () => 'secret' } as unknown as KeyMaterialCache;
    const dispatcher = new Dispatcher({ table: () => table, admission, keys, limiter: limiter.client, telemetry, logger: createLogger('test', 'error'), breakers });

    // k1's upstream is down: its breaker is open for the next 5 s.
    const k1 = breakers.key('main', 'k1');
    for (let i = 0; i < DEFAULT_BREAKER_OPTIONS.consecutiveFailures; i++) k1.failed(Permit.Pass, 'unavailable', Date.now());
    assert.equal(k1.state, 'open');

    const calledWith: string[] = [];
    const attempt = async (a: { keyId: string }): Promise<AttemptResult<string>> => {
      calledWith.push(a.keyId);
      return { ok: true, value: a.keyId };
    };
    for (let i = 0; i < 10; i++) assert.equal((await dispatcher.run(scope(i), attempt)).keyId, 'k2');

    assert.deepEqual(calledWith, Array(10).fill('k2'));
    // The lease would hand out k1 every other request; only the first finds its breaker open and asks again.
    assert.ok(limiter.acquires.length <= 1, `${limiter.acquires.length} exact Acquires to get around k1`);
  });
});

describe('a pool total\'s slot', () => {
  it('goes back once when the request ends before any key was called, and is taken once for all the keys it tried', async () => {
    const limiter = fakeLimiter();
    const admission = new LeaseAdmission(limiter.client, telemetry, new AcquireBatcher(limiter.client, telemetry), { holdMs: 60_000 });
    const provider = { id: 'mock', timeoutMs: 1_000 } as unknown as ProviderBinding;
    const total: ScopeGate = { kind: 'pool', id: 'main', poolId: 'pool/main', measure: 'tokens', tokenLimited: false, shortestWindowMs: 1_000, described: '10 requests per 1s' };
    const table: RouteTable = { ...EMPTY_ROUTE_TABLE, providers: new Map([['mock', provider]]), scopes: { ...EMPTY_SCOPE_TABLE, pools: new Map([['main', total]]) } };
    // k1 has no secret (it is skipped), k2's never arrives: the request waits on it until it is aborted.
    const keys = { secretOf: (_poolId: string, keyId: string) => (keyId === 'k1' ? undefined : new Promise<never>(() => {})) } as unknown as KeyMaterialCache;
    let taken = 0;
    const givenBack: ScopeSlot[] = [];
    const scopes = {
      take: (gate: ScopeGate): ScopeSlot => (taken++, { gate, admission: { granted: true, keyId: 'total' }, tokens: 0 } as unknown as ScopeSlot),
      giveBack: (slot: ScopeSlot) => givenBack.push(slot),
    } as unknown as ScopeAdmission;
    const dispatcher = new Dispatcher({ table: () => table, admission, keys, limiter: limiter.client, telemetry, logger: createLogger('test', 'error'), scopes });

    const controller = new AbortController();
    const request = { ...scope(0), signal: controller.signal };
    const served = dispatcher.run(request, async () => ({ ok: true, value: 'never' }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    controller.abort(new Error('the client left'));
    await assert.rejects(served);
    assert.equal(taken, 1, 'one slot serves every key the request tries');
    assert.equal(givenBack.length, 1, 'the slot no call spent goes back');
  });
});

describe('a grant that arrives after its request ended', () => {
  /** A dispatcher whose admissions (on keys, and on a tenant scope when `gated`) are answered only when the test says. */
  function lateRig(gated: boolean) {
    const limiter = fakeLimiter();
    const provider = { id: 'mock', timeoutMs: 1_000 } as unknown as ProviderBinding;
    const tenant: ScopeGate = { kind: 'tenant', id: 't', poolId: 'tenant/t', measure: 'tokens', tokenLimited: true, shortestWindowMs: 60_000, described: '1000 tokens per 1m' };
    const table: RouteTable = {
      ...EMPTY_ROUTE_TABLE,
      providers: new Map([['mock', provider]]),
      tokenLimitedPools: new Set(['main']),
      scopes: { ...EMPTY_SCOPE_TABLE, tenants: gated ? new Map([['t', tenant]]) : new Map() },
    };
    let grantKey: ((admission: Admission) => void) | undefined;
    let grantScope: ((slot: ScopeSlot) => void) | undefined;
    const admission = {
      admit: () => new Promise<Admission>((resolve) => (grantKey = resolve)),
    } as unknown as LeaseAdmission;
    const released: unknown[][] = [];
    const givenBack: ScopeSlot[] = [];
    const scopes = {
      take: () => new Promise<ScopeSlot>((resolve) => (grantScope = resolve)),
      giveBack: (slot: ScopeSlot) => givenBack.push(slot),
      release: (...args: unknown[]) => released.push(args),
    } as unknown as ScopeAdmission;
    const keys = { secretOf: () => 'secret' } as unknown as KeyMaterialCache;
    const dispatcher = new Dispatcher({ table: () => table, admission, keys, limiter: limiter.client, telemetry, logger: createLogger('test', 'error'), scopes });
    /** A request that waits for its admission until its caller leaves. */
    const endWhileWaiting = async (): Promise<void> => {
      const controller = new AbortController();
      const served = dispatcher.run({ ...scope(0), signal: controller.signal, tokens: new RequestTokens() }, async () => ({ ok: true, value: 'never' }));
      await new Promise((resolve) => setImmediate(resolve));
      controller.abort(new Error('the client left'));
      await assert.rejects(served);
    };
    return { endWhileWaiting, released, givenBack, grantKey: (a: Admission) => grantKey!(a), grantScope: (s: ScopeSlot) => grantScope!(s), tenant };
  }

  it('gives back a key\'s slot and reservation it no longer needs', async () => {
    const rig = lateRig(false);
    await rig.endWhileWaiting();
    const late: Admission = { granted: true, keyId: 'k1', admissionId: '9', decidedBy: INVALID_SPAN_CONTEXT };
    rig.grantKey(late);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(rig.released.length, 1);
    assert.deepEqual(rig.released[0]!.slice(0, 2), ['main', late]);
  });

  it('gives back a scope\'s slot it no longer needs', async () => {
    const rig = lateRig(true);
    await rig.endWhileWaiting();
    const slot = { gate: rig.tenant, admission: { granted: true, keyId: 'scope', decidedBy: INVALID_SPAN_CONTEXT }, tokens: 10 } as unknown as ScopeSlot;
    rig.grantScope(slot);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(rig.givenBack, [slot]);
  });
});
