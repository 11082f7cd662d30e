import assert from 'node:assert/strict';
import type { Policy, PolicyRoute } from '@keymesh/config';
import { Code, KeymeshError } from '@keymesh/errors';
import { ConcurrencyGuard, GuardReason } from './concurrency';

function route(alias: string, maxConcurrency: number | null): PolicyRoute {
  return { alias, strategy: 'fallback', targets: [], degraded: null, cacheTtlMs: null, timeoutMs: 30_000, retry: { rounds: 1, backoffMs: 100 }, maxConcurrency, defaultMaxTokens: 1024, maxWaitMs: 0, limits: null };
}

function policyWithTenants(caps: Record<string, number | null>): Policy {
  const tenants = Object.fromEntries(Object.entries(caps).map(([id, maxConcurrency]) => [id, { id, virtualKeySha256: [], maxConcurrency }]));
  return { tenants } as unknown as Policy;
}

function assertOverCap(fn: () => unknown): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KeymeshError);
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal(err.reason, GuardReason.CONCURRENCY_LIMIT);
    assert.equal(err.retryAfterMs, 1_000);
    return true;
  });
}

describe('ConcurrencyGuard', () => {
  it('rejects a route request over its cap while other routes still get slots', () => {
    const guard = new ConcurrencyGuard();
    const capped = route('capped', 2);
    const first = guard.acquire(capped, 't');
    guard.acquire(capped, 't');
    assertOverCap(() => guard.acquire(capped, 't'));
    for (let i = 0; i < 10; i++) guard.acquire(route('other', null), 't');
    first();
    guard.acquire(capped, 't');
    assertOverCap(() => guard.acquire(capped, 't'));
  });

  it('counts a slot given back twice only once', () => {
    const guard = new ConcurrencyGuard();
    const capped = route('capped', 1);
    const release = guard.acquire(capped, 't');
    const held = guard.acquire(route('capped', 2), 't');
    release();
    release();
    assert.equal(guard.inFlight().routes.get('capped'), 1);
    held();
    assert.equal(guard.inFlight().routes.size, 0);
  });

  it('caps a tenant across all routes and leaves other tenants alone', () => {
    const guard = new ConcurrencyGuard();
    guard.apply(policyWithTenants({ busy: 2, calm: null }));
    const release = guard.acquire(route('a', null), 'busy');
    guard.acquire(route('b', null), 'busy');
    assertOverCap(() => guard.acquire(route('c', null), 'busy'));
    for (let i = 0; i < 10; i++) guard.acquire(route('a', null), 'calm');
    release();
    guard.acquire(route('c', null), 'busy');
  });

  it('takes neither slot when one of the two caps is full', () => {
    const guard = new ConcurrencyGuard();
    guard.apply(policyWithTenants({ t: 1 }));
    guard.acquire(route('other', null), 't');
    assertOverCap(() => guard.acquire(route('capped', 5), 't'));
    assert.equal(guard.inFlight().routes.get('capped'), undefined);
  });

  it('keeps counting requests in flight across a policy reload', () => {
    const guard = new ConcurrencyGuard();
    guard.apply(policyWithTenants({ t: 2 }));
    const release = guard.acquire(route('r', 2), 't');
    guard.acquire(route('r', 2), 't');
    guard.apply(policyWithTenants({ t: 2 }));
    assertOverCap(() => guard.acquire(route('r', 2), 't'));
    release();
    guard.acquire(route('r', 2), 't');
  });

  it('does not count uncapped routes and tenants at all', () => {
    const guard = new ConcurrencyGuard();
    for (let i = 0; i < 100; i++) guard.acquire(route('free', null), 't');
    assert.equal(guard.inFlight().routes.size, 0);
    assert.equal(guard.inFlight().tenants.size, 0);
  });
});
