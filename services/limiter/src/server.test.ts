import assert from 'node:assert/strict';
import { compilePolicy, parseConfig } from '@keymesh/config';
import { KeyPoolLimiter } from './domain/key-pool-limiter';
import { poolSpecsOf } from './server';
import { MemoryLimiterStore } from './store/memory';

const POLICY = compilePolicy(
  parseConfig(
    `providers:
  mock: { kind: openai, base_url: http://127.0.0.1:9/v1 }
pools:
  main:
    provider: mock
    limits: { rpm: 100 }
    keys: [ { id: k1, secret_env: KEY_1 } ]
routes:
  r: { targets: [ { pool: main, model: m } ], limits: { tokens: 500, per: 10s } }
tenants:
  acme: { virtual_keys: [ sk-keymesh-acme ], limits: { requests: 2, per: 1s, rpd: 1000 } }
  free: { virtual_keys: [ sk-keymesh-free ] }
`,
    'keymesh.yaml',
  ),
  (plaintext) => `sealed:${Buffer.from(plaintext).reverse().toString('base64')}`,
);

describe('poolSpecsOf', () => {
  it('adds a pool of one key "total" for each limited tenant, route and pool total, after the pools', () => {
    const specs = poolSpecsOf(POLICY);
    assert.deepEqual(
      specs.map((s) => [s.poolId, s.keys.map((k) => k.keyId)]),
      [
        ['main', ['k1']],
        ['tenant/acme', ['total']],
        ['route/r', ['total']],
        ['pool/main', ['total']],
      ],
    );
    assert.deepEqual(specs[1]!.keys[0], {
      keyId: 'total',
      limits: [{ requests: 2, perMs: 1_000 }],
      tokenLimits: [],
      quotas: [{ unit: 'requests', limit: 1000, period: 'day', timeZone: 'UTC' }],
    });
    assert.deepEqual(specs[2]!.keys[0]!.tokenLimits, [{ tokens: 500, perMs: 10_000 }]);
  });

  it('gives a scope the windows of a key: exactly its limit, then a denial with the wait', async () => {
    const limiter = new KeyPoolLimiter(new MemoryLimiterStore());
    await limiter.applyPools(poolSpecsOf(POLICY));
    const nowMs = Date.UTC(2026, 0, 5, 12);
    assert.equal((await limiter.acquire({ poolId: 'tenant/acme' }, nowMs)).granted, true);
    assert.equal((await limiter.acquire({ poolId: 'tenant/acme' }, nowMs + 400)).granted, true);
    assert.deepEqual(await limiter.acquire({ poolId: 'tenant/acme' }, nowMs + 999), { granted: false, retryAfterMs: 1, reason: 'KEY_POOL_EXHAUSTED' });
    assert.equal((await limiter.acquire({ poolId: 'tenant/acme' }, nowMs + 1_000)).granted, true);
  });
});
