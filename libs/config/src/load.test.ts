import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from './config-error';
import { loadConfigFile, parseConfig } from './load';

const EXAMPLE = `providers:
  mock: { kind: openai, base_url: http://127.0.0.1:9000/v1 }
pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret_env: MOCK_KEY_1, limits: { rpm: 60 } }
      - { id: k2, secret: sk-test-2, limits: { requests: 5, per: 1s } }
routes:
  gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini } ] }
tenants:
  demo: { virtual_keys: [ sk-keymesh-demo ] }
`;

/** The example with one section swapped for another text. */
function withSection(name: 'providers' | 'pools' | 'routes' | 'tenants', text: string): string {
  const sections = EXAMPLE.split(/^(?=\w)/m);
  return sections.map((s) => (s.startsWith(`${name}:`) ? text.trimEnd() + '\n' : s)).join('');
}

function problemsOf(yaml: string, sourceName = 'keymesh.yaml'): string[] {
  try {
    parseConfig(yaml, sourceName);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.message, err.problems.join('\n'));
    return err.problems;
  }
  assert.fail('expected the config to be rejected');
}

function assertHasProblems(problems: string[], expected: string[]): void {
  for (const line of expected) assert.ok(problems.includes(line), `missing problem:\n  ${line}\ngot:\n  ${problems.join('\n  ')}`);
}

describe('parseConfig', () => {
  it("refuses a provider key named after one of keymesh's own variables (KEYMESH_*), which hold its master key and router token", () => {
    const problems = problemsOf(EXAMPLE.replace('secret_env: MOCK_KEY_1', 'secret_env: KEYMESH_MASTER_KEY'));
    assert.ok(
      problems.some((p) => p.startsWith('keymesh.yaml: pools.main.keys[0].secret_env') && p.includes("is one of keymesh's own variables (KEYMESH_*)")),
      problems.join('\n'),
    );
  });

  it('accepts the example config and normalizes it to camelCase with defaults', () => {
    const config = parseConfig(EXAMPLE, 'keymesh.yaml');
    assert.deepEqual(config.server, { http: { host: '127.0.0.1', port: 8080, maxBodyBytes: 1_048_576 }, idempotencyTtlMs: 600_000 });
    assert.deepEqual(config.providers['mock'], { id: 'mock', kind: 'openai', baseUrl: 'http://127.0.0.1:9000/v1', timeoutMs: 60_000 });
    assert.deepEqual(config.pools['main'], {
      id: 'main',
      providerId: 'mock',
      keys: [
        { id: 'k1', secret: { kind: 'env', name: 'MOCK_KEY_1' }, limits: [{ requests: 60, perMs: 60_000 }], tokenLimits: [], quotas: [], concurrency: null, weight: null, cost: null },
        { id: 'k2', secret: { kind: 'literal', value: 'sk-test-2' }, limits: [{ requests: 5, perMs: 1_000 }], tokenLimits: [], quotas: [], concurrency: null, weight: null, cost: null },
      ],
      quotaResets: { period: 'monthly', timeZone: 'UTC' },
      keySelection: 'headroom',
      reserveForHigh: 0,
      limits: null,
    });
    assert.deepEqual(config.routes['gpt-4o-mini'], {
      alias: 'gpt-4o-mini',
      strategy: 'fallback',
      targets: [{ poolId: 'main', model: 'gpt-4o-mini', weight: null, price: null }],
      degraded: null,
      cache: null,
      timeoutMs: 30_000,
      retry: { rounds: 3, backoffMs: 100 },
      maxConcurrency: null,
      defaultMaxTokens: 1024,
      maxWaitMs: 0,
      limits: null,
    });
    assert.deepEqual(config.tenants['demo'], { id: 'demo', virtualKeys: ['sk-keymesh-demo'], maxConcurrency: null, limits: null });
    assert.equal(config.mockProvider, null);
  });

  it('reads explicit server settings, timeouts, cache and compound durations', () => {
    const config = parseConfig(
      `server: { http: { host: 0.0.0.0, port: 0, max_body_bytes: 2048 } }\n` +
        withSection('routes', 'routes:\n  r: { targets: [ { pool: main, model: m } ], cache: { ttl: 1h30m }, timeout: 1m30s }').replace(
          'base_url: http://127.0.0.1:9000/v1',
          'base_url: "https://api.example.com/v1/", timeout: 2m',
        ),
      'keymesh.yaml',
    );
    assert.deepEqual(config.server.http, { host: '0.0.0.0', port: 0, maxBodyBytes: 2048 });
    assert.equal(config.providers['mock']!.timeoutMs, 120_000);
    assert.equal(config.providers['mock']!.baseUrl, 'https://api.example.com/v1');
    assert.deepEqual(config.routes['r']!.cache, { ttlMs: 5_400_000 });
    assert.equal(config.routes['r']!.timeoutMs, 90_000);
  });

  it('reads concurrency caps on routes and tenants and the idempotency window', () => {
    const config = parseConfig(
      `server: { idempotency_ttl: 90s }\n` +
        withSection('routes', 'routes:\n  r: { targets: [ { pool: main, model: m } ], max_concurrency: 8 }').replace(
          'demo: { virtual_keys: [ sk-keymesh-demo ] }',
          'demo: { virtual_keys: [ sk-keymesh-demo ], max_concurrency: 20 }',
        ),
      'keymesh.yaml',
    );
    assert.equal(config.routes['r']!.maxConcurrency, 8);
    assert.equal(config.tenants['demo']!.maxConcurrency, 20);
    assert.equal(config.server.idempotencyTtlMs, 90_000);
  });

  it('rejects a concurrency cap below 1 or not whole, and an idempotency window past a day', () => {
    const problems = problemsOf(
      `server: { idempotency_ttl: 2d }\n` +
        withSection('routes', 'routes:\n  r: { targets: [ { pool: main, model: m } ], max_concurrency: 0 }').replace(
          'demo: { virtual_keys: [ sk-keymesh-demo ] }',
          'demo: { virtual_keys: [ sk-keymesh-demo ], max_concurrency: 1.5 }',
        ),
    );
    assert.deepEqual(problems.sort(), [
      'keymesh.yaml: routes.r.max_concurrency: must be at least 1 (leave max_concurrency out for no cap)',
      'keymesh.yaml: server.idempotency_ttl: must be at most 1d (remembered responses are held in router memory)',
      'keymesh.yaml: tenants.demo.max_concurrency: expected a whole number of requests in flight at once, got a decimal number',
    ]);
  });

  it('reads mock_provider with its defaults, zero latency and both limit forms on one key', () => {
    const config = parseConfig(
      EXAMPLE +
        `mock_provider:\n  keys:\n    - { secret: mock-key-1, limits: { rpm: 600, requests: 10, per: 1s } }\n    - { secret_env: MOCK_KEY_2 }\n`,
      'keymesh.yaml',
    );
    assert.deepEqual(config.mockProvider, {
      port: 9000,
      latencyMs: 0,
      keys: [
        {
          secret: { kind: 'literal', value: 'mock-key-1' },
          limits: [
            { requests: 600, perMs: 60_000 },
            { requests: 10, perMs: 1_000 },
          ],
          tokenLimits: [],
        },
        { secret: { kind: 'env', name: 'MOCK_KEY_2' }, limits: [], tokenLimits: [] },
      ],
    });
  });

  it('reads a route strategy with weights or prices, and a degraded target or answer', () => {
    const config = parseConfig(
      withSection(
        'routes',
        `routes:
  w: { strategy: weighted, targets: [ { pool: main, model: a, weight: 3 }, { pool: main, model: b, weight: 0.5 } ], degraded: { target: { pool: main, model: cheap } } }
  c: { strategy: cost, targets: [ { pool: main, model: a, price: { input: 0.15, output: 0.6 } } ], degraded: { answer: "Sorry, try later." } }
  l: { strategy: latency, targets: [ { pool: main, model: a } ] }
  b: { strategy: least-busy, targets: [ { pool: main, model: a } ] }`,
      ),
      'keymesh.yaml',
    );
    assert.equal(config.routes['w']!.strategy, 'weighted');
    assert.deepEqual(config.routes['w']!.targets.map((t) => t.weight), [3, 0.5]);
    assert.deepEqual(config.routes['w']!.degraded, { kind: 'target', target: { poolId: 'main', model: 'cheap', price: null } });
    assert.deepEqual(config.routes['c']!.targets[0]!.price, { input: 0.15, output: 0.6 });
    assert.deepEqual(config.routes['c']!.degraded, { kind: 'answer', answer: 'Sorry, try later.' });
    assert.equal(config.routes['l']!.strategy, 'latency');
    assert.equal(config.routes['b']!.strategy, 'least-busy');
  });

  it('rejects unknown strategies, weights outside their strategy, and missing or non-positive weights and prices', () => {
    const problems = problemsOf(
      withSection(
        'routes',
        `routes:
  u: { strategy: random, targets: [ { pool: main, model: a } ] }
  w: { strategy: weighted, targets: [ { pool: main, model: a, weight: 0 }, { pool: main, model: b }, { pool: main, model: c, weight: -1 } ] }
  f: { targets: [ { pool: main, model: a, weight: 2, price: { input: 1, output: 2 } } ] }
  c: { strategy: cost, targets: [ { pool: main, model: a }, { pool: main, model: b, price: { input: -1, output: 2, cached: 1 } } ] }`,
      ),
    );
    assertHasProblems(problems, [
      'keymesh.yaml: routes.u.strategy: expected one of "fallback", "weighted", "least-busy", "latency", "cost"',
      'keymesh.yaml: routes.w.targets[0].weight: must be greater than 0 (leave the target out to send it nothing)',
      'keymesh.yaml: routes.w.targets[1].weight: missing: every target of a "weighted" route needs a weight',
      'keymesh.yaml: routes.w.targets[2].weight: must be greater than 0 (leave the target out to send it nothing)',
      'keymesh.yaml: routes.f.targets[0].weight: only allowed with strategy: weighted (this route\'s strategy is "fallback")',
      'keymesh.yaml: routes.c.targets[0].price: missing: every target of a "cost" route needs a price like { input: 0.15, output: 0.6 }',
      'keymesh.yaml: routes.c.targets[1].price.input: must be 0 or more',
    ]);
    assert.ok(problems.some((p) => p.startsWith('keymesh.yaml: routes.c.targets[1].price: unknown key "cached"')), problems.join('\n'));
  });

  it('takes a price on a target of any strategy, and on a degraded target', () => {
    const config = parseConfig(
      withSection(
        'routes',
        `routes:
  f: { targets: [ { pool: main, model: a, price: { input: 0.15, output: 0.6 } } ], degraded: { target: { pool: main, model: b, price: { input: 0.01, output: 0.02 } } } }
  w: { strategy: weighted, targets: [ { pool: main, model: a, weight: 1, price: { input: 2.5, output: 10 } } ] }`,
      ),
      'keymesh.yaml',
    );
    assert.deepEqual(config.routes['f']!.targets[0]!.price, { input: 0.15, output: 0.6 });
    assert.deepEqual(config.routes['f']!.degraded, { kind: 'target', target: { poolId: 'main', model: 'b', price: { input: 0.01, output: 0.02 } } });
    assert.deepEqual(config.routes['w']!.targets[0]!.price, { input: 2.5, output: 10 });
  });

  it('reads a cost quota in USD as micro-USD on tenants, routes and pool totals', () => {
    const yaml = withSection(
      'tenants',
      `tenants:
  demo: { virtual_keys: [ sk-keymesh-demo ], limits: { quota: { cost: 100, per: month, time_zone: Europe/Berlin } } }`,
    )
      .replace(
        'gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini } ] }',
        'gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini, price: { input: 0.15, output: 0.6 } } ], limits: { quota: { cost: 0.000123, tokens: 5000, per: day } } }',
      )
      .replace('    provider: mock\n', '    provider: mock\n    limits: { quota: { cost: 2.5, per: day } }\n');
    const config = parseConfig(yaml, 'keymesh.yaml');
    assert.deepEqual(config.tenants['demo']!.limits!.quotas, [{ unit: 'cost', limit: 100_000_000, period: 'month', timeZone: 'Europe/Berlin' }]);
    assert.deepEqual(config.routes['gpt-4o-mini']!.limits!.quotas, [
      { unit: 'tokens', limit: 5000, period: 'day', timeZone: 'UTC' },
      { unit: 'cost', limit: 123, period: 'day', timeZone: 'UTC' },
    ]);
    assert.deepEqual(config.pools['main']!.limits!.quotas, [{ unit: 'cost', limit: 2_500_000, period: 'day', timeZone: 'UTC' }]);
  });

  it('rejects a cost quota on a key, below one micro-USD, or with an unpriced target it could be spent on', () => {
    const yaml = `providers:
  mock: { kind: openai, base_url: http://127.0.0.1:9000/v1 }
pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: sk-1, limits: { quota: { cost: 5, per: day } } }
  other:
    provider: mock
    limits: { quota: { cost: 5, per: day } }
    keys:
      - { id: k2, secret: sk-2 }
routes:
  a: { targets: [ { pool: main, model: a, price: { input: 1, output: 1 } }, { pool: main, model: b } ], limits: { quota: { cost: 0.0000001, per: day } } }
  b: { targets: [ { pool: main, model: a, price: { input: 1, output: 1 } }, { pool: other, model: b } ] }
  c: { targets: [ { pool: main, model: a, price: { input: 1, output: 1 } } ], degraded: { target: { pool: main, model: z } }, limits: { quota: { cost: 1, per: day } } }
tenants:
  demo: { virtual_keys: [ sk-keymesh-demo ] }
`;
    assertHasProblems(problemsOf(yaml), [
      "keymesh.yaml: pools.main.keys[0].limits.quota.cost: applies to tenants, routes and pool totals only (a key's spend is its provider's quota)",
      'keymesh.yaml: routes.a.limits.quota.cost: must be at least 0.000001 (one micro-USD)',
      'keymesh.yaml: routes.b.targets[1].price: missing: pool "other" has a cost quota, so every target it can be served by needs a price like { input: 0.15, output: 0.6 }',
      'keymesh.yaml: routes.c.degraded.target.price: missing: this route has a cost quota, so every target it can be served by needs a price like { input: 0.15, output: 0.6 }',
    ]);
    const tenantYaml = withSection('tenants', `tenants:\n  demo: { virtual_keys: [ sk-keymesh-demo ], limits: { quota: { cost: 1, per: month } } }`);
    assert.deepEqual(problemsOf(tenantYaml), [
      'keymesh.yaml: routes.gpt-4o-mini.targets[0].price: missing: tenant "demo" has a cost quota, so every target it can be served by needs a price like { input: 0.15, output: 0.6 }',
    ]);
  });

  it('reads key_selection, weights, costs, reserve_for_high and burst into the pool and its keys', () => {
    const config = parseConfig(
      withSection(
        'pools',
        `pools:
  main:
    provider: mock
    key_selection: weighted
    reserve_for_high: 0.2
    keys:
      - { id: k1, secret: sk-a, weight: 3, limits: { rpm: 60, burst: 10 } }
      - { id: k2, secret: sk-b, weight: 1, limits: { requests: 100, per: 10s, burst: 20 } }
  cheap:
    provider: mock
    key_selection: cheapest
    keys:
      - { id: k3, secret: sk-c, cost: 0.15 }`,
      ),
      'keymesh.yaml',
    );
    const main = config.pools['main']!;
    assert.equal(main.keySelection, 'weighted');
    assert.equal(main.reserveForHigh, 0.2);
    assert.deepEqual(main.keys.map((k) => k.weight), [3, 1]);
    // 10 of 60 per minute at once: 10 in any 10 s; 20 of 100 per 10 s: 20 in any 2 s.
    assert.deepEqual(main.keys[0]!.limits, [{ requests: 60, perMs: 60_000 }, { requests: 10, perMs: 10_000, burst: true }]);
    assert.deepEqual(main.keys[1]!.limits, [{ requests: 100, perMs: 10_000 }, { requests: 20, perMs: 2_000, burst: true }]);
    assert.equal(config.pools['cheap']!.keys[0]!.cost, 0.15);
    assert.equal(config.pools['cheap']!.reserveForHigh, 0);
  });

  it('rejects unknown key selections, weights and costs outside their selection or missing, reserves outside [0, 1) and bursts outside 1..N', () => {
    const problems = problemsOf(
      withSection(
        'pools',
        `pools:
  main:
    provider: mock
    key_selection: random
    keys: [ { id: k1, secret: sk-a } ]
  w:
    provider: mock
    key_selection: weighted
    reserve_for_high: 1
    keys: [ { id: k2, secret: sk-b, weight: 0 }, { id: k3, secret: sk-c, cost: 1 } ]
  h:
    provider: mock
    reserve_for_high: -0.1
    keys: [ { id: k4, secret: sk-d, weight: 2, limits: { rpm: 60, burst: 61 } }, { id: k5, secret: sk-e, limits: { tpm: 100, burst: 1 } } ]
  c:
    provider: mock
    key_selection: cheapest
    keys: [ { id: k6, secret: sk-f, limits: { requests: 5, per: 1s, burst: 0 } }, { id: k7, secret: sk-g, cost: -1 } ]`,
      ),
    );
    assertHasProblems(problems, [
      'keymesh.yaml: pools.main.key_selection: expected one of "headroom", "weighted", "cheapest"',
      'keymesh.yaml: pools.w.reserve_for_high: must be below 1 (normal requests need some capacity)',
      'keymesh.yaml: pools.w.keys[0].weight: must be greater than 0 (leave the key out to send it nothing)',
      'keymesh.yaml: pools.w.keys[1].weight: missing: every key of a pool with key_selection: weighted needs a weight',
      'keymesh.yaml: pools.w.keys[1].cost: only allowed with key_selection: cheapest (this pool\'s is "weighted")',
      'keymesh.yaml: pools.h.reserve_for_high: must be from 0 to below 1',
      'keymesh.yaml: pools.h.keys[0].weight: only allowed with key_selection: weighted (this pool\'s is "headroom")',
      'keymesh.yaml: pools.h.keys[0].limits.burst: must be at most the window\'s request count (60), got 61',
      'keymesh.yaml: pools.h.keys[1].limits.burst: applies to request windows only; give rpm or requests with per',
      'keymesh.yaml: pools.c.keys[0].cost: missing: every key of a pool with key_selection: cheapest needs a cost',
      'keymesh.yaml: pools.c.keys[0].limits.burst: must be at least 1',
      'keymesh.yaml: pools.c.keys[1].cost: must be 0 or more',
    ]);
  });

  it('requires exactly one of target and answer in degraded, and a known pool for the target', () => {
    const problems = problemsOf(
      withSection(
        'routes',
        `routes:
  both: { targets: [ { pool: main, model: a } ], degraded: { target: { pool: main, model: b }, answer: "x" } }
  none: { targets: [ { pool: main, model: a } ], degraded: {} }
  empty: { targets: [ { pool: main, model: a } ], degraded: { answer: "" } }
  gone: { targets: [ { pool: main, model: a } ], degraded: { target: { pool: mian, model: b } } }`,
      ),
    );
    assertHasProblems(problems, [
      'keymesh.yaml: routes.both.degraded: set only one of "target" or "answer"',
      'keymesh.yaml: routes.none.degraded: missing "target" or "answer" (exactly one is required)',
      'keymesh.yaml: routes.empty.degraded.answer: must not be empty',
      'keymesh.yaml: routes.gone.degraded.target.pool: unknown pool "mian" (did you mean "main"?)',
    ]);
  });

  it('reports every kind of problem in one error, each naming the file and the path', () => {
    const problems = problemsOf(`server: { http: { port: 70000 } }
providers:
  mock: { kind: anthropic, base_url: http://127.0.0.1:9000/v1 }
pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret_env: MOCK_KEY_1, limits: { rpm: 60 } }
      - { id: k2, secret: sk-test-2, limits: { requests: 5, per: 5x } }
  spare: { provider: nowhere, keys: [ { id: k3, secret: sk-test-3 } ] }
routes:
  gpt-4o-mini: { targets: [ { pool: eu-gpt, model: gpt-4o-mini } ] }
tenants:
  demo: { virtual_keys: [ sk-keymesh-demo ], budget: 5 }
`);
    assert.deepEqual(problems.sort(), [
      'keymesh.yaml: pools.main.keys[1].limits.per: expected a duration like "500ms", "1s", "1m", "1h", "1d"',
      'keymesh.yaml: pools.spare.provider: unknown provider "nowhere"',
      'keymesh.yaml: providers.mock.kind: expected "openai" (any OpenAI-compatible server)',
      'keymesh.yaml: routes.gpt-4o-mini.targets[0].pool: unknown pool "eu-gpt"',
      'keymesh.yaml: server.http.port: expected a port from 0 to 65535',
      'keymesh.yaml: tenants.demo: unknown key "budget" (expected one of: virtual_keys, max_concurrency, limits)',
    ]);
  });

  it('names missing required sections and fields', () => {
    const problems = problemsOf('providers:\n  mock: { kind: openai }\npools: {}\nroutes: {}\n');
    assertHasProblems(problems, [
      'keymesh.yaml: providers.mock.base_url: missing required field (expected an http(s) URL like "http://127.0.0.1:9000/v1")',
      'keymesh.yaml: tenants: missing required field (expected a mapping)',
    ]);
  });

  it('rejects unknown keys at the top level', () => {
    const problems = problemsOf(EXAMPLE + 'route:\n  x: 1\n');
    assert.deepEqual(problems, ['keymesh.yaml: unknown key "route" (did you mean "routes"?)']);
  });

  it('rejects unknown keys in nested sections, one problem per key, and suggests the intended key', () => {
    const problems = problemsOf(
      EXAMPLE.replace('secret: sk-test-2,', 'secret: sk-test-2, priority: 2, secretEnv: X,').replace(
        'base_url: http://127.0.0.1:9000/v1',
        'baseUrl: http://127.0.0.1:9000/v1',
      ),
    );
    assertHasProblems(problems, [
      'keymesh.yaml: providers.mock: unknown key "baseUrl" (did you mean "base_url"?)',
      'keymesh.yaml: pools.main.keys[1]: unknown key "priority" (expected one of: id, secret, secret_env, limits, weight, cost)',
      'keymesh.yaml: pools.main.keys[1]: unknown key "secretEnv" (did you mean "secret_env"?)',
    ]);
  });

  it('requires exactly one of secret and secret_env, in pools and in the mock provider', () => {
    const problems = problemsOf(
      EXAMPLE.replace('{ id: k1, secret_env: MOCK_KEY_1,', '{ id: k1, secret_env: MOCK_KEY_1, secret: sk-both,').replace(
        '{ id: k2, secret: sk-test-2,',
        '{ id: k2,',
      ) + 'mock_provider:\n  keys: [ { limits: { rpm: 1 } } ]\n',
    );
    assert.deepEqual(problems, [
      'keymesh.yaml: pools.main.keys[0]: set only one of "secret" or "secret_env"',
      'keymesh.yaml: pools.main.keys[1]: missing "secret" or "secret_env" (exactly one is required)',
      'keymesh.yaml: mock_provider.keys[0]: missing "secret" or "secret_env" (exactly one is required)',
    ]);
  });

  it('rejects a key id used twice, even across pools', () => {
    const problems = problemsOf(
      withSection(
        'pools',
        `pools:
  main: { provider: mock, keys: [ { id: k1, secret: sk-a } ] }
  backup: { provider: mock, keys: [ { id: k2, secret: sk-b }, { id: k1, secret: sk-c } ] }`,
      ),
    );
    assert.deepEqual(problems, [
      'keymesh.yaml: pools.backup.keys[1].id: duplicate key id "k1" (first used at pools.main.keys[0]); key ids are unique across all pools',
    ]);
  });

  it('rejects one provider key listed twice for the same provider, without quoting it', () => {
    const problems = problemsOf(
      withSection(
        'pools',
        `pools:
  main: { provider: mock, keys: [ { id: k1, secret: sk-same-secret }, { id: k2, secret_env: KEY_A } ] }
  backup: { provider: mock, keys: [ { id: k3, secret: sk-same-secret }, { id: k4, secret_env: KEY_A } ] }`,
      ),
    );
    assert.equal(problems.length, 2);
    assert.match(problems[0]!, /^keymesh\.yaml: pools\.backup\.keys\[0\]\.secret: same secret as pools\.main\.keys\[0\]/);
    assert.match(problems[1]!, /^keymesh\.yaml: pools\.backup\.keys\[1\]\.secret_env: same secret_env as pools\.main\.keys\[1\]/);
    assert.ok(!problems.join('\n').includes('sk-same-secret'));
  });

  it('reports unknown pool and provider references together with schema errors, with a suggestion when close', () => {
    const problems = problemsOf(
      withSection('routes', 'routes:\n  a: { targets: [ { pool: mian, model: m }, { pool: eu-gpt, model: m } ], timeout: 0s }').replace(
        'provider: mock',
        'provider: mokc',
      ),
    );
    assert.deepEqual(problems, [
      'keymesh.yaml: routes.a.timeout: must be greater than 0',
      'keymesh.yaml: pools.main.provider: unknown provider "mokc" (did you mean "mock"?)',
      'keymesh.yaml: routes.a.targets[0].pool: unknown pool "mian" (did you mean "main"?)',
      'keymesh.yaml: routes.a.targets[1].pool: unknown pool "eu-gpt"',
    ]);
  });

  it('rejects a virtual key given to two tenants, or twice to one, without quoting it', () => {
    const problems = problemsOf(
      withSection('tenants', 'tenants:\n  a: { virtual_keys: [ sk-shared-key ] }\n  b: { virtual_keys: [ sk-own, sk-shared-key, sk-own ] }'),
    );
    assert.deepEqual(problems, [
      'keymesh.yaml: tenants.b.virtual_keys[1]: this virtual key is already listed at tenants.a.virtual_keys[0]; a virtual key belongs to one tenant only',
      'keymesh.yaml: tenants.b.virtual_keys[2]: this virtual key is already listed at tenants.b.virtual_keys[0]; a virtual key belongs to one tenant only',
    ]);
    assert.ok(!problems.join('\n').includes('sk-shared-key'));
  });

  it('rejects zero, unitless and malformed durations where a positive duration is required', () => {
    const problems = problemsOf(
      withSection(
        'routes',
        `routes:
  a: { targets: [ { pool: main, model: m } ], timeout: 30 }
  b: { targets: [ { pool: main, model: m } ], timeout: 30 sec }
  c: { targets: [ { pool: main, model: m } ], cache: { ttl: 0m } }
  d: { targets: [ { pool: main, model: m } ], timeout: 30s1m }
  e: { targets: [ { pool: main, model: m } ], timeout: 25d }`,
      ).replace('per: 1s', 'per: 0ms'),
    );
    assert.deepEqual(problems, [
      'keymesh.yaml: pools.main.keys[1].limits.per: must be greater than 0',
      'keymesh.yaml: routes.a.timeout: expected a duration like "500ms", "1s", "1m", "1h", "1d", got a number without a unit',
      'keymesh.yaml: routes.b.timeout: expected a duration like "500ms", "1s", "1m", "1h", "1d"',
      'keymesh.yaml: routes.c.cache.ttl: must be greater than 0',
      'keymesh.yaml: routes.d.timeout: expected a duration like "500ms", "1s", "1m", "1h", "1d"',
      'keymesh.yaml: routes.e.timeout: must be at most 24d20h31m23s647ms (longer timers overflow in Node)',
    ]);
  });

  it('reads tpm and tokens per window as token limits beside the request limits, and a route\'s default_max_tokens', () => {
    const config = parseConfig(
      withSection(
        'pools',
        `pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: sk-1, limits: { rpm: 60, tpm: 90000 } }
      - { id: k2, secret: sk-2, limits: { requests: 5, tokens: 2000, per: 1s } }
      - { id: k3, secret: sk-3, limits: { tokens: 500, per: 10s } }`,
      ).replace('gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini } ] }', 'gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini } ], default_max_tokens: 256 }'),
      'keymesh.yaml',
    );
    const keys = config.pools['main']!.keys;
    assert.deepEqual(keys[0]!.limits, [{ requests: 60, perMs: 60_000 }]);
    assert.deepEqual(keys[0]!.tokenLimits, [{ tokens: 90_000, perMs: 60_000 }]);
    assert.deepEqual(keys[1]!.limits, [{ requests: 5, perMs: 1_000 }]);
    assert.deepEqual(keys[1]!.tokenLimits, [{ tokens: 2_000, perMs: 1_000 }]);
    assert.deepEqual(keys[2]!.limits, []);
    assert.deepEqual(keys[2]!.tokenLimits, [{ tokens: 500, perMs: 10_000 }]);
    assert.equal(config.routes['gpt-4o-mini']!.defaultMaxTokens, 256);
    assert.deepEqual(problemsOf(withSection('pools', `pools:\n  main:\n    provider: mock\n    keys:\n      - { id: k1, secret: sk-1, limits: { tokens: 5 } }`)), [
      'keymesh.yaml: pools.main.keys[0].limits.per: missing: "tokens" needs "per" (e.g. tokens: 2000, per: 1s)',
    ]);
  });

  it('reads rpd / tpd and a quota as calendar quotas, in UTC unless a time zone is named', () => {
    const config = parseConfig(
      withSection(
        'pools',
        `pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: sk-1, limits: { rpm: 60, rpd: 10000, tpd: 2000000 } }
      - { id: k2, secret: sk-2, limits: { rpd: 500, time_zone: Asia/Tokyo, quota: { requests: 9000, tokens: 50000000, per: month, time_zone: Europe/Berlin } } }
      - { id: k3, secret: sk-3, limits: { quota: { tokens: 100, per: day } } }`,
      ),
      'keymesh.yaml',
    );
    const keys = config.pools['main']!.keys;
    assert.deepEqual(keys[0]!.limits, [{ requests: 60, perMs: 60_000 }]);
    assert.deepEqual(keys[0]!.quotas, [
      { unit: 'requests', limit: 10_000, period: 'day', timeZone: 'UTC' },
      { unit: 'tokens', limit: 2_000_000, period: 'day', timeZone: 'UTC' },
    ]);
    assert.deepEqual(keys[1]!.quotas, [
      { unit: 'requests', limit: 500, period: 'day', timeZone: 'Asia/Tokyo' },
      { unit: 'requests', limit: 9_000, period: 'month', timeZone: 'Europe/Berlin' },
      { unit: 'tokens', limit: 50_000_000, period: 'month', timeZone: 'Europe/Berlin' },
    ]);
    assert.deepEqual(keys[2]!.quotas, [{ unit: 'tokens', limit: 100, period: 'day', timeZone: 'UTC' }]);
  });

  it('names the path of an unknown time zone, a quota without a count or a period, and a stray time_zone', () => {
    const problems = problemsOf(
      withSection(
        'pools',
        `pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: sk-1, limits: { rpd: 10, time_zone: Mars/Olympus } }
      - { id: k2, secret: sk-2, limits: { quota: { requests: 5, per: day, time_zone: Europe/Berln } } }
      - { id: k3, secret: sk-3, limits: { quota: { per: week } } }
      - { id: k4, secret: sk-4, limits: { rpm: 5, time_zone: UTC } }
      - { id: k5, secret: sk-5, limits: { rpd: 0 } }`,
      ),
    );
    assert.deepEqual(problems, [
      'keymesh.yaml: pools.main.keys[0].limits.time_zone: unknown time zone "Mars/Olympus" (expected an IANA time zone like "Europe/Berlin" or "UTC")',
      'keymesh.yaml: pools.main.keys[1].limits.quota.time_zone: unknown time zone "Europe/Berln" (expected an IANA time zone like "Europe/Berlin" or "UTC")',
      'keymesh.yaml: pools.main.keys[2].limits.quota.per: expected "day" or "month"',
      'keymesh.yaml: pools.main.keys[2].limits.quota.requests: missing: a quota needs "requests", "tokens" or "cost" (e.g. requests: 10000, per: day)',
      'keymesh.yaml: pools.main.keys[3].limits.time_zone: applies to rpd and tpd only; give one, or set quota.time_zone',
      'keymesh.yaml: pools.main.keys[4].limits.rpd: must be at least 1',
    ]);
  });

  it('reads the limits of tenants, routes and pool totals with the same limits block as keys', () => {
    const yaml = withSection(
      'tenants',
      `tenants:
  demo: { virtual_keys: [ sk-keymesh-demo ], limits: { requests: 5, per: 2s, tpd: 100000 } }`,
    )
      .replace('gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini } ] }', 'gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini } ], limits: { rpm: 600, tpm: 90000 } }')
      .replace('    provider: mock\n', '    provider: mock\n    limits: { quota: { requests: 1000, per: month, time_zone: Europe/Berlin } }\n');
    const config = parseConfig(yaml, 'keymesh.yaml');
    assert.deepEqual(config.tenants['demo']!.limits, {
      requests: [{ requests: 5, perMs: 2_000 }],
      tokens: [],
      quotas: [{ unit: 'tokens', limit: 100_000, period: 'day', timeZone: 'UTC' }],
    });
    assert.deepEqual(config.routes['gpt-4o-mini']!.limits, { requests: [{ requests: 600, perMs: 60_000 }], tokens: [{ tokens: 90_000, perMs: 60_000 }], quotas: [] });
    assert.deepEqual(config.pools['main']!.limits, {
      requests: [],
      tokens: [],
      quotas: [{ unit: 'requests', limit: 1000, period: 'month', timeZone: 'Europe/Berlin' }],
    });
  });

  it('names the path of a bad limit on a tenant, a route and a pool', () => {
    const yaml = withSection('tenants', `tenants:\n  demo: { virtual_keys: [ sk-keymesh-demo ], limits: { requests: 5 } }`)
      .replace('gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini } ] }', 'gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini } ], limits: {} }')
      .replace('    provider: mock\n', '    provider: mock\n    limits: { rpm: 0, rps: 3 }\n');
    assert.deepEqual(problemsOf(yaml), [
      'keymesh.yaml: pools.main.limits.rpm: must be at least 1',
      'keymesh.yaml: pools.main.limits: unknown key "rps" (did you mean "rpm"?)',
      'keymesh.yaml: routes.gpt-4o-mini.limits: expected rpm, tpm, rpd, tpd, quota, concurrency, or requests/tokens with per (leave limits out for no limit)',
      'keymesh.yaml: tenants.demo.limits.per: missing: "requests" needs "per" (e.g. requests: 5, per: 1s)',
    ]);
  });

  it('rejects concurrency on a tenant, a route or a pool total, which hold no key', () => {
    const yaml = withSection('tenants', `tenants:\n  demo: { virtual_keys: [ sk-keymesh-demo ], limits: { rpm: 5, concurrency: 2 } }`).replace(
      '    provider: mock\n',
      '    provider: mock\n    limits: { concurrency: 3 }\n',
    );
    assert.deepEqual(problemsOf(yaml), [
      'keymesh.yaml: pools.main.limits.concurrency: applies to provider keys only (use max_concurrency on tenants and routes)',
      'keymesh.yaml: tenants.demo.limits.concurrency: applies to provider keys only (use max_concurrency on tenants and routes)',
    ]);
  });

  it('takes a key\'s concurrency as a whole number of requests in flight, alone or beside windows, into the policy', () => {
    const config = parseConfig(
      withSection(
        'pools',
        `pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: sk-1, limits: { concurrency: 5 } }
      - { id: k2, secret: sk-2, limits: { rpm: 60, concurrency: 1 } }
      - { id: k3, secret: sk-3, limits: { rpm: 60 } }`,
      ),
      'keymesh.yaml',
    );
    assert.deepEqual(config.pools['main']!.keys.map((k) => k.concurrency), [5, 1, null]);
    assert.deepEqual(config.pools['main']!.keys[0]!.limits, []);
  });

  it('names the path of a concurrency that is not a positive whole number, and rejects it on mock provider keys', () => {
    const problems = problemsOf(
      withSection(
        'pools',
        `pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: sk-1, limits: { concurrency: 0 } }
      - { id: k2, secret: sk-2, limits: { concurrency: 2.5 } }
      - { id: k3, secret: sk-3, limits: { concurrency: many } }
      - { id: k4, secret: sk-4, limits: { concurrency: 100001 } }`,
      ),
    );
    assert.deepEqual(problems, [
      'keymesh.yaml: pools.main.keys[0].limits.concurrency: must be at least 1 (leave concurrency out for no cap)',
      'keymesh.yaml: pools.main.keys[1].limits.concurrency: expected a whole number of requests in flight at once on this key, got a decimal number',
      'keymesh.yaml: pools.main.keys[2].limits.concurrency: expected a whole number of requests in flight at once on this key, got a string',
      'keymesh.yaml: pools.main.keys[3].limits.concurrency: must be at most 100000',
    ]);
    assert.deepEqual(problemsOf(EXAMPLE + 'mock_provider:\n  keys: [ { secret: mock-key-1, limits: { concurrency: 2 } } ]\n'), [
      'keymesh.yaml: mock_provider.keys[0].limits.concurrency: the mock provider enforces windows only; declare concurrency on pool keys',
    ]);
  });

  it('rejects calendar quotas on mock provider keys, which only enforce windows', () => {
    assert.deepEqual(problemsOf(EXAMPLE + 'mock_provider:\n  keys: [ { secret: mock-key-1, limits: { rpd: 5 } } ]\n'), [
      'keymesh.yaml: mock_provider.keys[0].limits: the mock provider enforces windows only (rpm, tpm, requests/tokens per); declare quotas on pool keys',
    ]);
  });

  it('rejects burst on mock provider keys, whose windows are whole milliseconds', () => {
    assert.deepEqual(problemsOf(EXAMPLE + 'mock_provider:\n  keys: [ { secret: mock-key-1, limits: { rpm: 60, burst: 7 } } ]\n'), [
      'keymesh.yaml: mock_provider.keys[0].limits.burst: the mock provider enforces rpm, tpm and requests/tokens per only; declare burst on pool keys',
    ]);
  });

  it('requires requests and per together, a non-empty limits mapping and at most 1000000 requests per window', () => {
    const problems = problemsOf(
      withSection(
        'pools',
        `pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: sk-1, limits: { requests: 5 } }
      - { id: k2, secret: sk-2, limits: { per: 1s } }
      - { id: k3, secret: sk-3, limits: {} }
      - { id: k4, secret: sk-4, limits: { rpm: 1000001 } }
      - { id: k5, secret: sk-5, limits: { requests: 0, per: 1s, rpm: 1.5 } }
      - { id: k6, secret: sk-6, limits: { requests: 1000000, per: 1s } }`,
      ),
    );
    assert.deepEqual(problems, [
      'keymesh.yaml: pools.main.keys[0].limits.per: missing: "requests" needs "per" (e.g. requests: 5, per: 1s)',
      'keymesh.yaml: pools.main.keys[1].limits.requests: missing: "per" needs "requests" or "tokens" (e.g. requests: 5, per: 1s)',
      'keymesh.yaml: pools.main.keys[2].limits: expected rpm, tpm, rpd, tpd, quota, concurrency, or requests/tokens with per (leave limits out for no limit)',
      'keymesh.yaml: pools.main.keys[3].limits.rpm: must be at most 1000000 per window (the limiter keeps one log entry per admission)',
      'keymesh.yaml: pools.main.keys[4].limits.rpm: expected a whole number, got a decimal number',
      'keymesh.yaml: pools.main.keys[4].limits.requests: must be at least 1',
    ]);
  });

  it('rejects ids outside [A-Za-z0-9._:-] or longer than 128 characters, and accepts the rest', () => {
    const long = 'p'.repeat(129);
    const problems = problemsOf(
      withSection('tenants', `tenants:\n  "team a": { virtual_keys: [ sk-a ] }\n  ${long}: { virtual_keys: [ sk-b ] }\n  "": { virtual_keys: [ sk-c ] }`).replace(
        '{ id: k1,',
        '{ id: "k/1",',
      ),
    );
    const why = 'invalid name: expected an id of 1-128 letters, digits, ".", "_", ":" or "-"';
    assertHasProblems(problems, [
      'keymesh.yaml: pools.main.keys[0].id: expected an id of 1-128 letters, digits, ".", "_", ":" or "-"',
      `keymesh.yaml: tenants["team a"]: ${why}`,
      `keymesh.yaml: tenants.${long}: ${why}`,
      `keymesh.yaml: tenants[""]: ${why}`,
    ]);
    assert.equal(problems.length, 4);
    const config = parseConfig(withSection('tenants', 'tenants:\n  "org:team.a_b-1": { virtual_keys: [ sk-a ] }'), 'keymesh.yaml');
    assert.ok(config.tenants['org:team.a_b-1']);
  });

  it('rejects "__proto__" as a name instead of silently dropping it', () => {
    const problems = problemsOf(withSection('tenants', 'tenants:\n  demo: { virtual_keys: [ sk-a ] }\n  __proto__: { virtual_keys: [ sk-b ] }'));
    assert.deepEqual(problems, ['keymesh.yaml: tenants.__proto__: "__proto__" is not allowed as a name']);
  });

  it('accepts only plain http(s) base URLs and stores them without a trailing slash', () => {
    const providers = (url: string) => withSection('providers', `providers:\n  mock: { kind: openai, base_url: "${url}" }`);
    assert.equal(parseConfig(providers('http://127.0.0.1:9000/v1/'), 'k.yaml').providers['mock']!.baseUrl, 'http://127.0.0.1:9000/v1');
    assert.deepEqual(problemsOf(providers('ftp://example.com/v1')), [
      'keymesh.yaml: providers.mock.base_url: expected an http(s) URL like "http://127.0.0.1:9000/v1"',
    ]);
    assert.deepEqual(problemsOf(providers('not a url')), [
      'keymesh.yaml: providers.mock.base_url: expected an http(s) URL like "http://127.0.0.1:9000/v1"',
    ]);
    assert.deepEqual(problemsOf(providers('https://user:sk-secret@example.com/v1')), [
      'keymesh.yaml: providers.mock.base_url: must not contain a user name or password (put keys in a pool)',
    ]);
    assert.deepEqual(problemsOf(providers('https://example.com/v1?key=1')), [
      'keymesh.yaml: providers.mock.base_url: must not have a query string or fragment',
    ]);
  });

  it('requires at least one key per pool, target per route and virtual key per tenant', () => {
    const problems = problemsOf(`providers:
  mock: { kind: openai, base_url: http://127.0.0.1:9000/v1 }
pools:
  main: { provider: mock, keys: [] }
routes:
  r: { targets: [] }
tenants:
  t: { virtual_keys: [] }
`);
    assert.deepEqual(problems, [
      'keymesh.yaml: pools.main.keys: expected at least one key',
      'keymesh.yaml: routes.r.targets: expected at least one target',
      'keymesh.yaml: tenants.t.virtual_keys: expected at least one virtual key',
    ]);
  });

  it('never quotes a secret or virtual key that fails validation', () => {
    const problems = problemsOf(
      EXAMPLE.replace('secret: sk-test-2', 'secret: "sk live secret"').replace('[ sk-keymesh-demo ]', '[ "sk keymesh demo", 12345678 ]'),
    );
    assert.deepEqual(problems, [
      'keymesh.yaml: pools.main.keys[1].secret: expected a key of visible ASCII characters without spaces (it is sent in an HTTP header)',
      'keymesh.yaml: tenants.demo.virtual_keys[0]: expected a virtual key of visible ASCII characters without spaces (it is sent in an HTTP header)',
      'keymesh.yaml: tenants.demo.virtual_keys[1]: expected a virtual key (quote it if YAML reads it as a number), got a number',
    ]);
  });

  it('returns a deeply frozen config', () => {
    const config = parseConfig(EXAMPLE, 'keymesh.yaml');
    const key = config.pools['main']!.keys[1]!;
    for (const part of [config, config.server.http, config.pools, config.pools['main'], config.pools['main']!.keys, key, key.secret, key.limits, key.limits[0]]) {
      assert.ok(Object.isFrozen(part));
    }
    assert.throws(() => {
      (key.limits[0] as { requests: number }).requests = 1_000;
    }, TypeError);
    assert.throws(() => {
      (config.routes as Record<string, unknown>)['new'] = {};
    }, TypeError);
  });

  it('gives id maps no prototype, so looking up an inherited name finds nothing', () => {
    const config = parseConfig(EXAMPLE, 'keymesh.yaml');
    assert.equal(config.routes['constructor'], undefined);
    assert.equal(config.tenants['toString'], undefined);
  });

  it('names file, line and column for YAML syntax errors, and skips schema checks', () => {
    const problems = problemsOf('providers:\n  mock: { kind: openai, base_url: http://x\npools: [\n', 'custom.yaml');
    assert.ok(problems.length >= 1);
    for (const problem of problems) assert.match(problem, /^custom\.yaml:\d+:\d+: /);
    assert.match(problems[0]!, /^custom\.yaml:3:/);
  });

  it('reports a duplicate YAML key with its line and column', () => {
    const problems = problemsOf(EXAMPLE + 'providers: {}\n');
    assert.deepEqual(problems, ['keymesh.yaml:13:1: duplicate key "providers"']);
  });

  it('reports an empty file and a file that is not a mapping', () => {
    assert.deepEqual(problemsOf('# nothing yet\n'), [
      'keymesh.yaml: the file is empty; expected a mapping with providers, pools, routes and tenants',
    ]);
    assert.deepEqual(problemsOf('- providers\n'), ['keymesh.yaml: expected a mapping with providers, pools, routes and tenants, got a list']);
  });

  it('accepts YAML anchors and merge keys for shared settings', () => {
    const config = parseConfig(
      withSection(
        'pools',
        `pools:
  main:
    provider: mock
    keys:
      - &base { id: k1, secret: sk-1, limits: { rpm: 60 } }
      - { <<: *base, id: k2, secret: sk-2 }`,
      ),
      'keymesh.yaml',
    );
    assert.deepEqual(config.pools['main']!.keys[1]!.limits, [{ requests: 60, perMs: 60_000 }]);
  });
});

describe('loadConfigFile', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'keymesh-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('loads a file and names problems by its base name', async () => {
    const good = join(dir, 'good.yaml');
    await writeFile(good, EXAMPLE);
    assert.equal((await loadConfigFile(good)).pools['main']!.keys.length, 2);

    const bad = join(dir, 'keymesh.yaml');
    await writeFile(bad, EXAMPLE.replace('pool: main', 'pool: eu-gpt'));
    await assert.rejects(loadConfigFile(bad), (err: ConfigError) => {
      assert.deepEqual(err.problems, ['keymesh.yaml: routes.gpt-4o-mini.targets[0].pool: unknown pool "eu-gpt"']);
      return true;
    });
  });

  it('reports a missing file as a ConfigError naming the path', async () => {
    const missing = join(dir, 'nope', 'keymesh.yaml');
    await assert.rejects(loadConfigFile(missing), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [`${missing}: no such file`]);
      return true;
    });
  });
});
