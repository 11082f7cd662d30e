import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startMockProvider, type MockProvider } from '@keymesh/mock-provider';
import { Code, KeymeshError } from '@keymesh/errors';
import { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { RouterService } from '@keymesh/proto/router/v1/router';
import { closeRpcClient, createRpcClient, type RpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { setTimeout as delay } from 'node:timers/promises';
import { redisForTests, waitFor, type ExternalServer } from '@keymesh/testing';
import { cliJson, limiterClient, startTestMesh, VIRTUAL_KEY, type TestMesh, type TestMeshOptions } from './harness';

const CAPPED = 'sk-keymesh-capped';
const FREE = 'sk-keymesh-free';
const ONE = 'sk-keymesh-one';
const TOKENS = 'sk-keymesh-tokens';
const PAIR = 'sk-keymesh-pair';
const GRPC = 'sk-keymesh-grpc';

// Generous declared limits, so the keys themselves never deny (and take no probe).
const ROOMY_KEYS: TestMeshOptions = { mockKeys: [{}, {}], declaredLimits: ['{ rpm: 6000 }', '{ rpm: 6000 }'] };

interface Answer {
  readonly status: number;
  readonly retryAfter: string | null;
  readonly error: { message: string; type: string; code: string } | undefined;
}

async function ask(t: TestMesh, virtualKey: string, model: string, content: string): Promise<Answer> {
  const response = await fetch(`${t.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${virtualKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
  });
  const body = (await response.json()) as { error?: Answer['error'] };
  return { status: response.status, retryAfter: response.headers.get('retry-after'), error: body.error };
}

const statusesOf = (answers: Answer[]): string => answers.map((a) => a.status).join(' ');

describe('limits per tenant and per route', function () {
  let t: TestMesh | undefined;
  let limiter: RpcClient<typeof LimiterService> | undefined;

  before(async function () {
    t = await startTestMesh({
      ...ROOMY_KEYS,
      extraRoutes: [
        '  capped-route: { targets: [ { pool: main, model: gpt-4o-mini } ], retry: { attempts: 1 }, limits: { requests: 4, per: 2s } }',
        '  shared: { targets: [ { pool: main, model: gpt-4o-mini } ], retry: { attempts: 1 }, limits: { requests: 3, per: 10s } }',
        '  tight: { targets: [ { pool: main, model: gpt-4o-mini } ], default_max_tokens: 300 }',
        '  watched: { targets: [ { pool: main, model: gpt-4o-mini } ], limits: { requests: 5, per: 10s } }',
      ].join('\n'),
      extraTenants: [
        `  capped: { virtual_keys: [ ${CAPPED} ], limits: { requests: 3, per: 2s } }`,
        `  free: { virtual_keys: [ ${FREE} ] }`,
        `  one: { virtual_keys: [ ${ONE} ], limits: { requests: 1, per: 10s } }`,
        `  tokens: { virtual_keys: [ ${TOKENS} ], limits: { tokens: 1000, per: 20s } }`,
        `  grpc: { virtual_keys: [ ${GRPC} ], limits: { requests: 1, per: 10s } }`,
      ].join('\n'),
    });
    limiter = limiterClient(t);
  });

  after(async function () {
    if (limiter) closeRpcClient(limiter);
    await t?.stop();
  });

  it('admits exactly N of a tenant limited to N per 2s, then answers 429 with an honest retry-after, while another tenant is served on the same keys', async function () {
    const before = t!.mock.stats().requests;
    const burst = await Promise.all(Array.from({ length: 7 }, (_, i) => ask(t!, CAPPED, 'gpt-4o-mini', `capped ${i}`)));
    assert.equal(burst.filter((a) => a.status === 200).length, 3, statusesOf(burst));
    const denied = burst.filter((a) => a.status !== 200);
    assert.equal(denied.length, 4, statusesOf(burst));
    for (const answer of denied) {
      assert.equal(answer.status, 429);
      assert.equal(answer.error?.type, 'rate_limit_error');
      assert.equal(answer.error?.code, 'rate_limit_exceeded');
      const message = answer.error?.message ?? '';
      assert.match(message, /^Rate limit reached for tenant "capped" \(limit: 3 requests per 2s\)\. Please try again in [0-9.]+s\.$/);
      // The window frees up 2s after the leased slots' stamps, which lie a lease hold (100ms) past their grant.
      const exactSeconds = Number(/in ([0-9.]+)s/.exec(message)![1]);
      assert.ok(exactSeconds > 1.5 && exactSeconds <= 2.1, message);
      assert.equal(Number(answer.retryAfter), Math.ceil(exactSeconds), `retry-after ${answer.retryAfter} (whole seconds, rounded up)`);
    }
    // The other tenant goes on being served by the same keys.
    const others = await Promise.all(Array.from({ length: 10 }, (_, i) => ask(t!, FREE, 'gpt-4o-mini', `free ${i}`)));
    assert.deepEqual(others.map((a) => a.status), Array(10).fill(200));
    assert.equal(t!.mock.stats().requests - before, 3 + 10, 'no upstream call for a denied request');
    // Honest: after the retry-after the tenant is served again.
    await delay(Number(denied[0]!.retryAfter) * 1000);
    assert.equal((await ask(t!, CAPPED, 'gpt-4o-mini', 'capped again')).status, 200);
  });

  it('shows a scope\'s remaining requests and reset with `keymesh limits`', async function () {
    type Printed = { keys: { poolId: string; keyId: string; remainingRequests?: number; limitRequests?: number; window?: string; resetIn?: string }[] };
    const printed = (...argv: string[]): Promise<Printed> => cliJson<Printed>(t!, ...argv);
    const all = await printed('limits');
    assert.deepEqual(all.keys.map((k) => k.poolId).sort(), ['route/capped-route', 'route/shared', 'route/watched', 'tenant/capped', 'tenant/grpc', 'tenant/one', 'tenant/tokens']);
    for (let i = 0; i < 2; i++) assert.equal((await ask(t!, VIRTUAL_KEY, 'watched', `watched ${i}`)).status, 200);
    const [route] = (await printed('limits', '--route', 'watched')).keys;
    const { resetIn, ...rest } = route!;
    assert.deepEqual(rest, { poolId: 'route/watched', keyId: 'total', condition: 'KEY_CONDITION_READY', remainingRequests: 3, limitRequests: 5, window: '10s' });
    // The newest slot leaves the window 10s after its stamp, a lease hold (500ms) past its grant.
    const resetSeconds = Number(resetIn?.replace(/s$/, ''));
    assert.ok(resetSeconds > 9 && resetSeconds <= 10.5, `reset in ${resetIn}`);
  });

  it('caps a route for all tenants together', async function () {
    const answers: Answer[] = [];
    for (let i = 0; i < 8; i++) answers.push(await ask(t!, i % 2 === 0 ? VIRTUAL_KEY : FREE, 'capped-route', `route ${i}`));
    assert.equal(statusesOf(answers), '200 200 200 200 429 429 429 429');
    assert.match(answers[4]!.error?.message ?? '', /^Rate limit reached for route "capped-route" \(limit: 4 requests per 2s\)\./);
    assert.ok(Number(answers[4]!.retryAfter) >= 1);
    // Another route on the same keys is not capped.
    assert.equal((await ask(t!, VIRTUAL_KEY, 'gpt-4o-mini', 'uncapped')).status, 200);
  });

  it('spends nothing of a route on requests their tenant denied: the route still fills exactly to its limit', async function () {
    const fromOne = [];
    for (let i = 0; i < 3; i++) fromOne.push(await ask(t!, ONE, 'shared', `one ${i}`));
    assert.equal(statusesOf(fromOne), '200 429 429');
    assert.match(fromOne[1]!.error?.message ?? '', /tenant "one"/);
    // The route (3 per 10s) spent one slot on tenant "one": two are left for everybody else.
    const fromOthers = [];
    for (let i = 0; i < 3; i++) fromOthers.push(await ask(t!, VIRTUAL_KEY, 'shared', `other ${i}`));
    assert.equal(statusesOf(fromOthers), '200 200 429');
    assert.match(fromOthers[2]!.error?.message ?? '', /route "shared"/);
  });

  it('answers RESOURCE_EXHAUSTED over gRPC, with the scope in ErrorInfo and the wait in RetryInfo', async function () {
    const router = createRpcClient(RouterService, t!.grpcAddress, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 10_000 });
    try {
      const chat = () => router.chat({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'grpc' }] }, { headers: { authorization: `Bearer ${GRPC}` } });
      await chat();
      await assert.rejects(chat(), (err: unknown) => {
        assert.ok(err instanceof KeymeshError);
        assert.equal(err.code, Code.ResourceExhausted);
        assert.equal(err.reason, 'SCOPE_LIMIT_EXCEEDED');
        assert.deepEqual({ ...err.metadata }, { scope: 'tenant', tenant: 'grpc' });
        // Until the window (10s) has passed the slot's stamp, a lease hold (500ms) past its grant.
        assert.ok(err.retryAfterMs !== undefined && err.retryAfterMs > 9_000 && err.retryAfterMs <= 10_500, `retry after ${err.retryAfterMs}`);
        assert.match(err.message, /tenant "grpc" \(limit: 1 requests per 10s\)/);
        return true;
      });
    } finally {
      closeRpcClient(router);
    }
  });

  it('corrects a token-limited tenant to what the provider reported, so later requests fit', async function () {
    const remaining = async (): Promise<number> => {
      const { keys } = await limiter!.getKeyState({ poolId: 'tenant/tokens' });
      return Number(keys[0]!.tokenWindows[0]!.remainingTokens);
    };
    // Each request reserves about 310 (the route's default 300 plus its prompt) and uses about 20:
    // without settles the fourth would find the tenant's 1000 spent.
    for (let i = 0; i < 8; i++) {
      await waitFor(async () => (await remaining()) >= 320, { timeoutMs: 5_000, what: `room for request ${i} (settles giving unused tokens back)` });
      const answer = await ask(t!, TOKENS, 'tight', `tokens ${i}`);
      assert.equal(answer.status, 200, answer.error?.message);
    }
  });
});

describe('limits on a pool total', function () {
  let t: TestMesh | undefined;
  let side: MockProvider | undefined;
  const SIDE_SECRET = 'side-secret-1';

  beforeEach(async function () {
    side = await startMockProvider({ keys: [{ secret: SIDE_SECRET }] });
    t = await startTestMesh({
      ...ROOMY_KEYS,
      mainPoolSettings: ['limits: { requests: 3, per: 10s }'],
      extraProviders: `  side: { kind: openai, base_url: ${side.url} }`,
      extraPools: `  side:\n    provider: side\n    keys:\n      - { id: s1, secret: ${SIDE_SECRET}, limits: { rpm: 6000 } }`,
      extraRoutes: [
        '  via-main: { targets: [ { pool: main, model: gpt-4o-mini } ], retry: { attempts: 1 } }',
        '  via-side: { targets: [ { pool: side, model: gpt-4o-mini } ], retry: { attempts: 1 } }',
      ].join('\n'),
      extraTenants: `  pair: { virtual_keys: [ ${PAIR} ], limits: { requests: 4, per: 10s } }`,
    });
  });

  afterEach(async function () {
    await t?.stop();
    await side?.close();
  });

  it('caps the keys of a pool together', async function () {
    const burst = await Promise.all(Array.from({ length: 8 }, (_, i) => ask(t!, VIRTUAL_KEY, 'via-main', `burst ${i}`)));
    assert.equal(burst.filter((a) => a.status === 200).length, 3, statusesOf(burst));
    const denied = burst.filter((a) => a.status === 429);
    assert.equal(denied.length, 5, statusesOf(burst));
    assert.match(denied[0]!.error?.message ?? '', /^Rate limit reached for the total of pool "main" \(limit: 3 requests per 10s\)\. Please try again in [0-9.]+s\.$/);
    assert.ok(Number(denied[0]!.retryAfter) >= 1);
    assert.equal(t!.mock.stats().requests, 3);
    // Another pool is not capped by it.
    assert.equal((await ask(t!, VIRTUAL_KEY, 'via-side', 'side')).status, 200);
  });

  it("gives a tenant's slot back when the pool total denies the request, so the tenant still gets its whole limit", async function () {
    const answers: Answer[] = [];
    for (let i = 0; i < 4; i++) answers.push(await ask(t!, PAIR, 'via-main', `main ${i}`));
    // The pool total (3) denies the fourth after the tenant (4) admitted it.
    assert.equal(statusesOf(answers), '200 200 200 429');
    assert.match(answers[3]!.error?.message ?? '', /pool "main"/);
    // The tenant's fourth slot was given back: another pool serves it, and only then is the tenant full.
    assert.equal((await ask(t!, PAIR, 'via-side', 'side 1')).status, 200);
    const last = await ask(t!, PAIR, 'via-side', 'side 2');
    assert.equal(last.status, 429);
    assert.match(last.error?.message ?? '', /tenant "pair"/);
  });
});

describe('a tenant limit across two replicas sharing Redis', function () {
  let redis: ExternalServer;
  let a: TestMesh | undefined;
  let b: TestMesh | undefined;

  before(async function () {
    redis = await redisForTests();
    // Two whole meshes (router and limiter each) on one prefix, as two replicas of one deployment.
    const env = { REDIS_URL: redis.url, KEYMESH_REDIS_PREFIX: `e2e-scopes-${randomBytes(6).toString('hex')}` };
    const options = { ...ROOMY_KEYS, env, extraTenants: `  capped: { virtual_keys: [ ${CAPPED} ], limits: { requests: 6, per: 3s } }` };
    a = await startTestMesh(options);
    b = await startTestMesh(options);
  });

  after(async function () {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  it('admits exactly the limit over both', async function () {
    const answers = await Promise.all(Array.from({ length: 16 }, (_, i) => ask(i % 2 === 0 ? a! : b!, CAPPED, 'gpt-4o-mini', `replica ${i}`)));
    assert.equal(answers.filter((x) => x.status === 200).length, 6, statusesOf(answers));
    assert.equal(answers.filter((x) => x.status === 429).length, 10, statusesOf(answers));
    assert.equal(a!.mock.stats().requests + b!.mock.stats().requests, 6);
  });
});
