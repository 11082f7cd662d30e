import assert from 'node:assert/strict';
import { ConfigError } from './config-error';
import { sha256Hex } from './hash';
import { parseConfig } from './load';
import { compilePolicy, parsePolicy, type Policy } from './policy';
import { ID_PATTERN } from './schema';
import { costMicroUsd, formatUsd } from './price';
import { describeLimitSet, isCostScopePoolId, limitedScopesOf } from './scopes';

const CONFIG = parseConfig(
  `server: { http: { port: 8181 } }
providers:
  mock: { kind: openai, base_url: http://127.0.0.1:9000/v1, timeout: 10s }
  backup: { kind: openai, base_url: https://llm.example.com/v1 }
pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret_env: MOCK_KEY_1, limits: { rpm: 60 } }
      - { id: k2, secret: sk-test-secret-two, limits: { requests: 5, per: 1s } }
  spare:
    provider: backup
    limits: { rpm: 100 }
    keys:
      - { id: k3, secret: sk-test-secret-three }
routes:
  gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini }, { pool: spare, model: gpt-4o-mini-2024 } ] }
  weighted: { strategy: weighted, targets: [ { pool: main, model: a, weight: 3 }, { pool: spare, model: b, weight: 1 } ], degraded: { target: { pool: spare, model: cheap } } }
  cheapest: { strategy: cost, targets: [ { pool: main, model: a, price: { input: 0.15, output: 0.6 } } ], degraded: { answer: "Sorry." } }
  cached: { targets: [ { pool: main, model: gpt-4o-mini } ], cache: { ttl: 5m }, timeout: 45s, max_concurrency: 4, max_wait: 2s, limits: { tokens: 5000, per: 10s } }
tenants:
  demo: { virtual_keys: [ sk-keymesh-demo-virtual, sk-keymesh-demo-second ] }
  ops: { virtual_keys: [ sk-keymesh-ops-virtual ], max_concurrency: 2, limits: { requests: 5, per: 2s, rpd: 1000 } }
`,
  'keymesh.yaml',
);

// Reversed base64: unreadable in the output, yet trivially openable in a test.
const seal = (plaintext: string) => `sealed:${Buffer.from(plaintext).toString('base64').split('').reverse().join('')}`;
const unseal = (sealed: string) => Buffer.from(sealed.slice('sealed:'.length).split('').reverse().join(''), 'base64').toString();

function policyProblems(policy: unknown): string[] {
  try {
    parsePolicy(JSON.stringify(policy));
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems;
  }
  assert.fail('expected the policy to be rejected');
}

describe('compilePolicy', () => {
  it('compiles providers, pools, keys, routes, tenants and the HTTP settings', () => {
    const policy = compilePolicy(CONFIG, seal);
    assert.deepEqual({ ...policy.providers }, {
      mock: { id: 'mock', kind: 'openai', baseUrl: 'http://127.0.0.1:9000/v1', timeoutMs: 10_000 },
      backup: { id: 'backup', kind: 'openai', baseUrl: 'https://llm.example.com/v1', timeoutMs: 60_000 },
    });
    assert.deepEqual(policy.pools['main'], {
      id: 'main',
      providerId: 'mock',
      keyIds: ['k1', 'k2'],
      quotaResets: { period: 'monthly', timeZone: 'UTC' },
      keySelection: 'headroom',
      reserveForHigh: 0,
      limits: null,
    });
    assert.deepEqual(policy.pools['spare']!.limits, { requests: [{ requests: 100, perMs: 60_000 }], tokens: [], quotas: [] });
    assert.deepEqual(policy.keys['k1'], {
      id: 'k1',
      poolId: 'main',
      providerId: 'mock',
      secret: { kind: 'env', name: 'MOCK_KEY_1' },
      limits: [{ requests: 60, perMs: 60_000 }],
      tokenLimits: [],
      quotas: [],
      concurrency: null,
      fingerprint: '',
      weight: null,
      cost: null,
    });
    const k2 = policy.keys['k2']!;
    assert.equal(k2.secret.kind, 'sealed');
    assert.equal(unseal((k2.secret as { sealed: string }).sealed), 'sk-test-secret-two');
    assert.equal(k2.fingerprint, sha256Hex('sk-test-secret-two').slice(0, 12));
    assert.deepEqual(policy.keys['k3']!.limits, []);
    assert.deepEqual(policy.routes['gpt-4o-mini'], {
      alias: 'gpt-4o-mini',
      strategy: 'fallback',
      targets: [
        { poolId: 'main', providerId: 'mock', model: 'gpt-4o-mini', weight: null, price: null },
        { poolId: 'spare', providerId: 'backup', model: 'gpt-4o-mini-2024', weight: null, price: null },
      ],
      degraded: null,
      cacheTtlMs: null,
      timeoutMs: 30_000,
      retry: { rounds: 3, backoffMs: 100 },
      maxConcurrency: null,
      defaultMaxTokens: 1024,
      maxWaitMs: 0,
      limits: null,
    });
    assert.deepEqual(policy.routes['cached']!.limits, { requests: [], tokens: [{ tokens: 5000, perMs: 10_000 }], quotas: [] });
    assert.equal(policy.routes['weighted']!.strategy, 'weighted');
    assert.deepEqual(policy.routes['weighted']!.targets.map((t) => t.weight), [3, 1]);
    assert.deepEqual(policy.routes['weighted']!.degraded, {
      kind: 'target',
      target: { poolId: 'spare', providerId: 'backup', model: 'cheap', weight: null, price: null },
    });
    assert.deepEqual(policy.routes['cheapest']!.targets[0]!.price, { input: 0.15, output: 0.6 });
    assert.deepEqual(policy.routes['cheapest']!.degraded, { kind: 'answer', answer: 'Sorry.' });
    assert.equal(policy.routes['cached']!.cacheTtlMs, 300_000);
    assert.equal(policy.routes['cached']!.timeoutMs, 45_000);
    assert.deepEqual(policy.tenants['demo'], {
      id: 'demo',
      virtualKeySha256: [sha256Hex('sk-keymesh-demo-virtual'), sha256Hex('sk-keymesh-demo-second')],
      maxConcurrency: null,
      limits: null,
    });
    assert.deepEqual(policy.tenants['ops']!.limits, {
      requests: [{ requests: 5, perMs: 2_000 }],
      tokens: [],
      quotas: [{ unit: 'requests', limit: 1000, period: 'day', timeZone: 'UTC' }],
    });
    assert.equal(policy.routes['cached']!.maxConcurrency, 4);
    assert.equal(policy.routes['cached']!.maxWaitMs, 2_000);
    assert.equal(policy.tenants['ops']!.maxConcurrency, 2);
    assert.deepEqual(policy.http, { host: '127.0.0.1', port: 8181, maxBodyBytes: 1_048_576, idempotencyTtlMs: 600_000 });
  });

  it('contains no plaintext secret or virtual key anywhere in its JSON', () => {
    const json = JSON.stringify(compilePolicy(CONFIG, seal));
    for (const plaintext of [
      'sk-test-secret-two',
      'sk-test-secret-three',
      'sk-keymesh-demo-virtual',
      'sk-keymesh-demo-second',
      'sk-keymesh-ops-virtual',
    ]) {
      assert.ok(!json.includes(plaintext), `${plaintext} leaked into the policy`);
      assert.ok(!json.includes(Buffer.from(plaintext).toString('base64')), `${plaintext} leaked as plain base64`);
    }
    // The env var's name is not a secret, and services need it to find the key.
    assert.ok(json.includes('MOCK_KEY_1'));
  });

  it('refuses a sealing function that returns the plaintext, without quoting it', () => {
    assert.throws(
      () => compilePolicy(CONFIG, (plaintext) => plaintext),
      (err: Error) => /unsealed value for key "k2"/.test(err.message) && !err.message.includes('sk-test-secret-two'),
    );
    assert.throws(() => compilePolicy(CONFIG, (plaintext) => `v1:${plaintext}`), /unsealed/);
    assert.throws(() => compilePolicy(CONFIG, () => ''), /empty or unsealed/);
  });

  it('returns a deeply frozen policy whose maps have no prototype', () => {
    const policy = compilePolicy(CONFIG, seal);
    for (const part of [policy, policy.keys, policy.keys['k2'], policy.keys['k2']!.limits, policy.routes['gpt-4o-mini']!.targets[0], policy.http]) {
      assert.ok(Object.isFrozen(part));
    }
    assert.throws(() => {
      (policy.pools['main']!.keyIds as string[]).push('k9');
    }, TypeError);
    assert.equal(policy.routes['constructor'], undefined);
  });
});

describe('limitedScopesOf', () => {
  it('lists every limited tenant, route and pool as a pool of its own whose id no configured pool can have', () => {
    const scopes = limitedScopesOf(compilePolicy(CONFIG, seal));
    assert.deepEqual(
      scopes.map((s) => [s.kind, s.id, s.poolId]),
      [
        ['tenant', 'ops', 'tenant/ops'],
        ['route', 'cached', 'route/cached'],
        ['pool', 'spare', 'pool/spare'],
      ],
    );
    for (const scope of scopes) assert.ok(!ID_PATTERN.test(scope.poolId), `${scope.poolId} could be a configured id`);
    assert.equal(describeLimitSet(scopes[0]!.limits), '5 requests per 2s, 1000 requests per day (UTC)');
    assert.equal(describeLimitSet(scopes[1]!.limits), '5000 tokens per 10s');
  });

  it("puts a scope's cost quotas in a pool of their own, apart from its other limits, and survives a policy round trip", () => {
    const config = parseConfig(
      `providers:
  mock: { kind: openai, base_url: http://127.0.0.1:9000/v1 }
pools:
  main: { provider: mock, keys: [ { id: k1, secret: sk-1 } ], limits: { quota: { cost: 0.5, per: day } } }
routes:
  r: { targets: [ { pool: main, model: m, price: { input: 1, output: 2 } } ] }
tenants:
  acme: { virtual_keys: [ vk-1 ], limits: { rpm: 10, quota: { cost: 100, per: month, time_zone: Europe/Berlin } } }
`,
      'keymesh.yaml',
    );
    const scopes = limitedScopesOf(parsePolicy(JSON.stringify(compilePolicy(config, seal))));
    assert.deepEqual(
      scopes.map((s) => [s.poolId, s.measure, s.limits.requests.length, s.limits.quotas.map((q) => `${q.unit}:${q.limit}`)]),
      [
        ['tenant/acme', 'tokens', 1, []],
        ['tenant/acme/cost', 'cost', 0, ['cost:100000000']],
        ['pool/main/cost', 'cost', 0, ['cost:500000']],
      ],
    );
    for (const scope of scopes) {
      assert.equal(isCostScopePoolId(scope.poolId), scope.measure === 'cost');
      assert.ok(!ID_PATTERN.test(scope.poolId), `${scope.poolId} could be a configured id`);
    }
    assert.equal(isCostScopePoolId('pool/cost'), false, 'a scope named "cost" is not a cost pool');
    assert.equal(describeLimitSet(scopes[1]!.limits), 'monthly cost quota of $100 (Europe/Berlin)');
    assert.equal(describeLimitSet(scopes[2]!.limits), 'daily cost quota of $0.5 (UTC)');
  });
});

describe('costMicroUsd', () => {
  it('prices tokens in whole micro-USD, rounded up, without float noise adding one', () => {
    assert.equal(costMicroUsd({ input: 0.15, output: 0.6 }, 20, 0), 3, '20 × 0.15 is 3.0000000000000004 in floats');
    assert.equal(costMicroUsd({ input: 0.15, output: 0.6 }, 10, 1), 3, '1.5 + 0.6 rounds up to 3');
    assert.equal(costMicroUsd({ input: 2.5, output: 10 }, 1_000_000, 1_000_000), 12_500_000);
    assert.equal(costMicroUsd({ input: 0, output: 0 }, 500, 500), 0);
    assert.equal(formatUsd(100_000_000), '$100');
    assert.equal(formatUsd(123), '$0.000123');
  });
});

describe('parsePolicy', () => {
  it('reads a policy without scope limits (from an older control plane) as having none', () => {
    const json = JSON.parse(JSON.stringify(compilePolicy(CONFIG, seal))) as { pools: Record<string, { limits?: unknown }>; routes: Record<string, { limits?: unknown }>; tenants: Record<string, { limits?: unknown }> };
    for (const section of [json.pools, json.routes, json.tenants]) for (const entry of Object.values(section)) delete entry.limits;
    const policy = parsePolicy(JSON.stringify(json));
    assert.equal(policy.tenants['ops']!.limits, null);
    assert.deepEqual(limitedScopesOf(policy), []);
  });

  it('round-trips a compiled policy through JSON into an equal, frozen policy', () => {
    const policy = compilePolicy(CONFIG, seal);
    const parsed = parsePolicy(JSON.stringify(policy));
    assert.deepStrictEqual(parsed, policy);
    assert.ok(Object.isFrozen(parsed.tenants['ops']!.virtualKeySha256));
    assert.equal(parsed.keys['hasOwnProperty'], undefined);
  });

  it('rejects unknown fields, bad values and dangling references, listing every problem', () => {
    const policy = JSON.parse(JSON.stringify(compilePolicy(CONFIG, seal))) as {
      -readonly [K in keyof Policy]: Record<string, Record<string, unknown>>;
    };
    policy.providers['mock']!['region'] = 'eu';
    policy.keys['k1']!['limits'] = [{ requests: 0, perMs: 1000 }];
    policy.keys['k2']!['fingerprint'] = 'not-hex';
    policy.pools['spare']!['providerId'] = 'gone';
    policy.routes['cached']!['targets'] = [{ poolId: 'nowhere', providerId: 'mock', model: 'm', weight: null, price: null }];
    policy.routes['weighted']!['strategy'] = 'random';
    policy.routes['weighted']!['degraded'] = { kind: 'target', target: { poolId: 'main', providerId: 'backup', model: 'cheap', weight: null, price: null } };
    policy.tenants['ops']!['id'] = 'dev';
    policy.tenants['demo']!['maxConcurrency'] = 0;
    assert.deepEqual(policyProblems(policy), [
      'policy: providers.mock: unknown key "region" (expected one of: id, kind, baseUrl, timeoutMs)',
      'policy: keys.k1.limits[0].requests: must be at least 1',
      'policy: keys.k2.fingerprint: expected 12 hex digits or ""',
      'policy: routes.weighted.strategy: expected "fallback" or "weighted" or "least-busy" or "latency" or "cost"',
      'policy: tenants.demo.maxConcurrency: must be at least 1',
      'policy: tenants.ops.id: expected "ops" (its map key)',
      'policy: pools.spare.providerId: unknown provider "gone"',
      "policy: keys.k3.providerId: expected its pool's provider",
      "policy: routes.gpt-4o-mini.targets[1].providerId: expected its pool's provider",
      "policy: routes.weighted.targets[1].providerId: expected its pool's provider",
      "policy: routes.weighted.degraded.target.providerId: expected its pool's provider",
      'policy: routes.cached.targets[0].poolId: unknown pool "nowhere"',
    ]);
  });

  it('rejects keys missing from their pool and pools listing unknown keys', () => {
    const policy = JSON.parse(JSON.stringify(compilePolicy(CONFIG, seal))) as Record<string, Record<string, Record<string, unknown>>>;
    policy['pools']!['main']!['keyIds'] = ['k1', 'k3', 'k7'];
    assert.deepEqual(policyProblems(policy), [
      'policy: pools.main.keyIds[1]: key "k3" belongs to another pool',
      'policy: pools.main.keyIds[2]: unknown key "k7"',
    ]);
  });

  it('rejects invalid JSON without quoting the text', () => {
    assert.throws(
      () => parsePolicy('{"keys": {"k2": {"secret": "sealed:abc"'),
      (err: unknown) => err instanceof ConfigError && err.message === 'policy: invalid JSON',
    );
  });
});
