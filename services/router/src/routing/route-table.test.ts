import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { compilePolicy, parseConfig } from '@keymesh/config';
import { buildRouteTable, EMPTY_ROUTE_TABLE, leaseHoldOf } from './route-table';

const policyWith = (limits: string) =>
  compilePolicy(
    parseConfig(
      `
providers:
  p: { kind: openai, base_url: http://127.0.0.1:9/v1 }
pools:
  main:
    provider: p
    keys:
      - { id: k1, secret_env: K1${limits ? `, limits: ${limits}` : ''} }
routes:
  r: { targets: [ { pool: main, model: m } ] }
tenants:
  t: { virtual_keys: [ sk-keymesh-t ] }
`,
      'test.yaml',
    ),
    (plaintext) => `sealed:${plaintext.length}`,
  );

describe('lease hold per pool', () => {
  it('is a twentieth of the shortest window, so leased slots cost about 5% of capacity', () => {
    assert.equal(leaseHoldOf(policyWith('{ requests: 20, per: 2s }'), 'main'), 100);
  });
  it('is at most a second for long windows and at least 20 ms for short ones', () => {
    assert.equal(leaseHoldOf(policyWith('{ rpm: 600 }'), 'main'), 1_000);
    assert.equal(leaseHoldOf(policyWith('{ requests: 5, per: 100ms }'), 'main'), 20);
  });
  it('is a second for keys without declared limits', () => {
    assert.equal(leaseHoldOf(policyWith(''), 'main'), 1_000);
  });
});

describe('scopes with limits', () => {
  it('are looked up by tenant, route and pool, each with a lease hold from its own shortest window', () => {
    const yaml = `providers:\n  p: { kind: openai, base_url: http://127.0.0.1:9/v1 }\npools:\n  main:\n    provider: p\n    limits: { rpd: 5000 }\n    keys: [ { id: k1, secret: s1 } ]\nroutes:\n  r: { targets: [ { pool: main, model: m } ], limits: { requests: 20, per: 2s } }\ntenants:\n  t: { virtual_keys: [ sk-keymesh-t ], limits: { tokens: 900, per: 400ms } }\n  free: { virtual_keys: [ sk-keymesh-free ] }\n`;
    const { table } = buildRouteTable(compilePolicy(parseConfig(yaml, 't.yaml'), (p) => `sealed:${p.length}`), 1n, EMPTY_ROUTE_TABLE);
    assert.deepEqual([...table.scopes.tenants.keys()], ['t']);
    assert.deepEqual({ ...table.scopes.tenants.get('t')! }, { kind: 'tenant', id: 't', poolId: 'tenant/t', measure: 'tokens', tokenLimited: true, shortestWindowMs: 400, described: '900 tokens per 400ms' });
    assert.equal(table.scopes.routes.get('r')!.tokenLimited, false);
    assert.equal(table.scopes.pools.get('main')!.described, '5000 requests per day (UTC)');
    assert.equal(table.leaseHoldMs.get('tenant/t'), 20);
    assert.equal(table.leaseHoldMs.get('route/r'), 100);
    assert.equal(table.leaseHoldMs.get('pool/main'), 1_000);
  });

  it('keep a scope\'s cost quota as a gate of its own that reserves an estimate, with a lease hold', () => {
    const yaml = `providers:\n  p: { kind: openai, base_url: http://127.0.0.1:9/v1 }\npools:\n  main:\n    provider: p\n    keys: [ { id: k1, secret: s1 } ]\nroutes:\n  r: { targets: [ { pool: main, model: m, price: { input: 1, output: 2 } } ] }\ntenants:\n  t: { virtual_keys: [ sk-keymesh-t ], limits: { rpm: 60, quota: { cost: 5, per: month } } }\n`;
    const { table } = buildRouteTable(compilePolicy(parseConfig(yaml, 't.yaml'), (p) => `sealed:${p.length}`), 1n, EMPTY_ROUTE_TABLE);
    assert.equal(table.scopes.tenants.get('t')!.described, '60 requests per 1m');
    const { shortestWindowMs, ...cost } = table.scopes.tenantCosts.get('t')!;
    assert.deepEqual(cost, { kind: 'tenant', id: 't', poolId: 'tenant/t/cost', measure: 'cost', tokenLimited: true, described: 'monthly cost quota of $5 (UTC)' });
    assert.equal(shortestWindowMs, Number.POSITIVE_INFINITY);
    assert.equal(table.leaseHoldMs.get('tenant/t/cost'), 1_000);
  });
});

describe('the tokenizer', () => {
  // In a fresh process: this one has loaded the tokenizer already for other tests.
  const tokenizerLoadedAfterTableWith = (limits: string, tenantLimits = ''): boolean => {
    const script = `
      const { compilePolicy, parseConfig } = require(${JSON.stringify(require.resolve('@keymesh/config'))});
      const { buildRouteTable, EMPTY_ROUTE_TABLE } = require(${JSON.stringify(require.resolve('./route-table'))});
      const yaml = ${JSON.stringify(`providers:\n  p: { kind: openai, base_url: http://127.0.0.1:9/v1 }\npools:\n  main:\n    provider: p\n    keys:\n      - { id: k1, secret: s1${limits ? `, limits: ${limits}` : ''} }\nroutes:\n  r: { targets: [ { pool: main, model: m } ] }\ntenants:\n  t: { virtual_keys: [ sk-keymesh-t ]${tenantLimits ? `, limits: ${tenantLimits}` : ''} }\n`)};
      buildRouteTable(compilePolicy(parseConfig(yaml, 't.yaml'), (p) => p), 1n, EMPTY_ROUTE_TABLE);
      process.stdout.write(String(Object.keys(require.cache).some((path) => path.includes('gpt-tokenizer'))));`;
    return execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }) === 'true';
  };

  it('stays unloaded (~70 MB) while no pool has a token limit, and loads with a config that has one', () => {
    assert.equal(tokenizerLoadedAfterTableWith(''), false);
    assert.equal(tokenizerLoadedAfterTableWith('{ tpm: 1000 }'), true);
  });

  it('loads with a tenant, route or pool total that has a token limit, and not for one with request limits only', () => {
    assert.equal(tokenizerLoadedAfterTableWith('', '{ rpm: 60 }'), false);
    assert.equal(tokenizerLoadedAfterTableWith('', '{ tpd: 100000 }'), true);
  });
});
