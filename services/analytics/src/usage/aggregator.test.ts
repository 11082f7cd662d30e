import assert from 'node:assert/strict';
import { UsageAggregator } from './aggregator';
import type { UsageTotals } from './totals';
import type { UsageRecord } from './types';

let nextId = 0;

function event(overrides: Partial<UsageRecord> = {}): UsageRecord {
  return {
    requestId: `req-${++nextId}`,
    tenantId: 'acme',
    route: 'chat',
    model: 'gpt-4o-mini',
    keyId: 'key-1',
    promptTokens: 10,
    completionTokens: 5,
    costMicroUsd: 0n,
    latency: { seconds: 0n, nanos: 250_000_000 },
    status: 200,
    attempts: 1,
    cached: false,
    errorReason: '',
    ...overrides,
  };
}

function counts(totals: UsageTotals): Record<string, number> {
  return { ...totals };
}

describe('UsageAggregator', () => {
  it('sums cost exactly per tenant, model, key and route', () => {
    const usage = new UsageAggregator();
    usage.record(event({ tenantId: 'acme', route: 'chat', keyId: 'key-1', costMicroUsd: 150n }));
    usage.record(event({ tenantId: 'acme', route: 'fast', keyId: 'key-2', costMicroUsd: 7n }));
    usage.record(event({ tenantId: 'globex', route: 'chat', keyId: 'key-1', costMicroUsd: 1_000_001n }));
    usage.record(event({ tenantId: 'globex', route: 'chat', keyId: 'key-1', cached: true }));
    const report = usage.report();
    const costs = (groups: { name: string; totals: UsageTotals }[]) => Object.fromEntries(groups.map((g) => [g.name, g.totals.costMicroUsd]));
    assert.equal(report.totals.costMicroUsd, 1_000_158);
    assert.deepEqual(costs(report.tenants), { acme: 157, globex: 1_000_001 });
    assert.deepEqual(costs(report.keys), { 'key-1': 1_000_151, 'key-2': 7 });
    assert.deepEqual(costs(report.routes), { chat: 1_000_151, fast: 7 });
    assert.deepEqual(costs(usage.report('acme').routes), { chat: 150, fast: 7 });
  });

  it('counts a request once when its event is delivered twice', () => {
    const usage = new UsageAggregator();
    const once = event({ requestId: 'req-dup' });
    assert.equal(usage.record(once), true);
    assert.equal(usage.record({ ...once }), false);
    const report = usage.report();
    assert.equal(report.totals.requests, 1);
    assert.equal(report.totals.promptTokens, 10);
    assert.equal(usage.duplicates, 1);
  });

  it('forgets request ids beyond its memory bound', () => {
    const usage = new UsageAggregator({ rememberedRequestIds: 2 });
    for (const requestId of ['a', 'b', 'c']) usage.record(event({ requestId }));
    assert.equal(usage.record(event({ requestId: 'a' })), true);
    assert.equal(usage.report().totals.requests, 4);
  });

  it('counts every event without a request id, since it cannot tell them apart', () => {
    const usage = new UsageAggregator();
    usage.record(event({ requestId: '' }));
    usage.record(event({ requestId: '' }));
    assert.equal(usage.report().totals.requests, 2);
  });

  it('counts an error for a status of 400 or more, or an error reason', () => {
    const usage = new UsageAggregator();
    usage.record(event({ status: 200 }));
    usage.record(event({ status: 399 }));
    usage.record(event({ status: 400 }));
    usage.record(event({ status: 503, errorReason: 'PROVIDER_UNAVAILABLE' }));
    usage.record(event({ status: 200, errorReason: 'PROVIDER_ERROR' }));
    const totals = usage.report().totals;
    assert.equal(totals.requests, 5);
    assert.equal(totals.errors, 3);
  });

  it('sums tokens, attempts, cached answers and latency, carrying nanos into seconds', () => {
    const usage = new UsageAggregator();
    usage.record(event({ promptTokens: 7, completionTokens: 3, attempts: 2, latency: { seconds: 1n, nanos: 600_000_000 } }));
    usage.record(event({ promptTokens: 5, completionTokens: 0, attempts: 0, cached: true, latency: { seconds: 0n, nanos: 500_000_000 } }));
    usage.record(event({ latency: undefined }));
    assert.deepEqual(counts(usage.report().totals), {
      requests: 3,
      errors: 0,
      cached: 1,
      promptTokens: 22,
      completionTokens: 8,
      costMicroUsd: 0,
      attempts: 3,
      latencySeconds: 2,
      latencyNanos: 100_000_000,
    });
  });

  it("filters to one tenant: its totals, only it among tenants, only its models' and keys' events", () => {
    const usage = new UsageAggregator();
    usage.record(event({ tenantId: 'acme', model: 'gpt-4o-mini', keyId: 'key-1', promptTokens: 1 }));
    usage.record(event({ tenantId: 'acme', model: 'gpt-4o', keyId: 'key-2', promptTokens: 2 }));
    usage.record(event({ tenantId: 'globex', model: 'gpt-4o-mini', keyId: 'key-1', promptTokens: 40 }));
    usage.record(event({ tenantId: 'globex', model: 'o3', keyId: 'key-3', promptTokens: 80 }));

    const acme = usage.report('acme');
    assert.equal(acme.totals.requests, 2);
    assert.equal(acme.totals.promptTokens, 3);
    assert.deepEqual(acme.tenants.map((g) => [g.name, g.totals.requests]), [['acme', 2]]);
    assert.deepEqual(acme.models.map((g) => [g.name, g.totals.promptTokens]), [['gpt-4o', 2], ['gpt-4o-mini', 1]]);
    assert.deepEqual(acme.keys.map((g) => [g.name, g.totals.promptTokens]), [['key-1', 1], ['key-2', 2]]);

    const all = usage.report();
    assert.equal(all.totals.promptTokens, 123);
    assert.deepEqual(all.tenants.map((g) => [g.name, g.totals.promptTokens]), [['acme', 3], ['globex', 120]]);
    assert.deepEqual(all.models.map((g) => [g.name, g.totals.promptTokens]), [['gpt-4o', 2], ['gpt-4o-mini', 41], ['o3', 80]]);
    assert.deepEqual(all.keys.map((g) => [g.name, g.totals.promptTokens]), [['key-1', 41], ['key-2', 2], ['key-3', 80]]);
  });

  it('answers zeros and no groups for a tenant it has not seen', () => {
    const usage = new UsageAggregator();
    usage.record(event());
    const report = usage.report('nobody');
    assert.equal(report.totals.requests, 0);
    assert.deepEqual([report.tenants, report.models, report.keys], [[], [], []]);
  });

  it('counts events without a model or key in the totals but in no model or key group', () => {
    const usage = new UsageAggregator();
    usage.record(event({ model: '', keyId: '', cached: true }));
    const report = usage.report('acme');
    assert.equal(report.totals.requests, 1);
    assert.deepEqual([report.models, report.keys], [[], []]);
  });

  it('hands out snapshots that later events do not change', () => {
    const usage = new UsageAggregator();
    usage.record(event());
    const before = usage.report();
    usage.record(event());
    assert.equal(before.totals.requests, 1);
    assert.equal(before.tenants[0]?.totals.requests, 1);
    assert.equal(before.models[0]?.totals.requests, 1);
    assert.equal(before.keys[0]?.totals.requests, 1);
  });
});
