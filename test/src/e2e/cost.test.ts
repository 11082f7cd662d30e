import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { startMockProvider, type MockProvider } from '@keymesh/mock-provider';
import { LimiterService, QuotaPeriod, QuotaUnit } from '@keymesh/proto/limiter/v1/limiter';
import { closeRpcClient, type RpcClient } from '@keymesh/rpc';
import { redisForTests, waitFor, type ExternalServer } from '@keymesh/testing';
import { cliJson, limiterClient, startTestMesh, type TestMesh } from './harness';

const SPENDER = 'sk-keymesh-spender';
const PAYER = 'sk-keymesh-payer';
const SETTLER = 'sk-keymesh-settler';
const FRUGAL = 'sk-keymesh-frugal';
const TINY = 'sk-keymesh-tiny';
const DAY_MS = 86_400_000;

// The mock's usage is fixed by the request: "abcdefgh" is 2 prompt tokens
// (4 characters a token) and the reply "mock reply to: abcdefgh" 6 completion
// tokens. Prices are USD per 1M tokens, i.e. micro-USD per token.
const CONTENT = 'abcdefgh';
const PROMPT_TOKENS = 2;
const COMPLETION_TOKENS = 6;
// input 3, output 5: 2 × 3 + 6 × 5 = 36 micro-USD a request.
const PRICED_COST = PROMPT_TOKENS * 3 + COMPLETION_TOKENS * 5;
// The quota route is free on input, so a request's estimate (its tokenizer-counted prompt at the input price,
// its max_tokens of 6 at the output price) is exactly its real cost of 6 × 2 = 12: three requests spend a quota of 36.
const QUOTA_COST = COMPLETION_TOKENS * 2;

interface Answer {
  readonly status: number;
  readonly retryAfterS: number;
  readonly message: string | undefined;
}

async function ask(t: TestMesh, virtualKey: string, model: string, extra: Record<string, unknown> = {}): Promise<Answer> {
  const response = await fetch(`${t.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${virtualKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: CONTENT }], ...extra }),
  });
  const body = (await response.json()) as { error?: { message: string }; usage?: { prompt_tokens: number; completion_tokens: number } };
  if (response.status === 200) assert.deepEqual([body.usage?.prompt_tokens, body.usage?.completion_tokens], [PROMPT_TOKENS, COMPLETION_TOKENS]);
  return { status: response.status, retryAfterS: Number(response.headers.get('retry-after')), message: body.error?.message };
}

interface UsageJson {
  totals?: { requests?: string; costMicroUsd?: string };
  tenants?: { name: string; totals?: { costMicroUsd?: string } }[];
  keys?: { name: string; totals?: { requests?: string; costMicroUsd?: string } }[];
  routes?: { name: string; totals?: { costMicroUsd?: string } }[];
}

async function usageOf(t: TestMesh, virtualKey: string): Promise<UsageJson> {
  const response = await fetch(`${t.baseUrl}/usage`, { headers: { authorization: `Bearer ${virtualKey}` } });
  assert.equal(response.status, 200);
  return (await response.json()) as UsageJson;
}

const costOf = (totals: { costMicroUsd?: string } | undefined): number => Number(totals?.costMicroUsd ?? 0);

for (const store of ['memory', 'redis'] as const) describe(`cost per request and cost quotas (${store} limiter store)`, function () {
  let t: TestMesh | undefined;
  let limiter: RpcClient<typeof LimiterService> | undefined;
  let other: MockProvider | undefined;
  let redis: ExternalServer | undefined;

  before(async function () {
    if (store === 'redis') redis = await redisForTests();
    // A second provider for a pool of its own, whose total has a cost quota.
    other = await startMockProvider({ keys: [{ secret: 'other-secret' }] });
    t = await startTestMesh({
      env: redis === undefined ? {} : { REDIS_URL: redis.url, KEYMESH_REDIS_PREFIX: `e2e-cost-${randomBytes(6).toString('hex')}` },
      mockKeys: [{}, {}],
      declaredLimits: ['{ rpm: 6000 }', '{ rpm: 6000 }'],
      extraRoutes: [
        '  priced: { targets: [ { pool: main, model: gpt-4o-mini, price: { input: 3, output: 5 } } ] }',
        '  priced-cached: { targets: [ { pool: main, model: gpt-4o-mini, price: { input: 3, output: 5 } } ], cache: { ttl: 5m } }',
        '  metered: { targets: [ { pool: main, model: gpt-4o-mini, price: { input: 0, output: 2 } } ], retry: { attempts: 1 } }',
        // Served by its first target (output 2), but a cost quota must reserve at its dearest (output 4).
        '  two-prices: { targets: [ { pool: main, model: gpt-4o-mini, price: { input: 0, output: 2 } }, { pool: main, model: gpt-4o-mini, price: { input: 0, output: 4 } } ], retry: { attempts: 1 } }',
        '  pooled: { targets: [ { pool: capped, model: gpt-4o-mini, price: { input: 0, output: 2 } } ], retry: { attempts: 1 } }',
        '  pooled-too: { targets: [ { pool: capped, model: gpt-4o-mini, price: { input: 0, output: 2 } } ], retry: { attempts: 1 } }',
      ].join('\n'),
      extraProviders: `  other: { kind: openai, base_url: ${other.url} }`,
      extraPools: [
        '  capped:',
        '    provider: other',
        `    limits: { quota: { cost: ${(2 * QUOTA_COST) / 1e6}, per: day } }`,
        '    keys: [ { id: c1, secret: other-secret } ]',
      ].join('\n'),
      extraTenants: [
        `  payer: { virtual_keys: [ ${PAYER} ] }`,
        `  spender: { virtual_keys: [ ${SPENDER} ], limits: { quota: { cost: ${(3 * QUOTA_COST) / 1e6}, per: day } } }`,
        `  settler: { virtual_keys: [ ${SETTLER} ], limits: { quota: { cost: 1, per: month } } }`,
        `  tiny: { virtual_keys: [ ${TINY} ], limits: { quota: { cost: ${(3 * QUOTA_COST) / 1e6}, per: day } } }`,
        `  frugal: { virtual_keys: [ ${FRUGAL} ], limits: { quota: { cost: ${(COMPLETION_TOKENS * 4) / 1e6}, per: day } } }`,
      ].join('\n'),
      // A tenant's cost quota reaches every route, so every target needs a price.
      defaultTargetPrice: '{ input: 3, output: 5 }',
    });
    limiter = limiterClient(t);
  });

  after(async function () {
    if (limiter) closeRpcClient(limiter);
    await t?.stop();
    await other?.close();
    await redis?.stop();
  });

  it('costs each served request from the provider\'s usage at its target\'s price, totals it exactly per tenant, key and route, and a cache hit costs 0', async function () {
    const answers: Answer[] = [];
    for (let i = 0; i < 7; i++) answers.push(await ask(t!, PAYER, 'priced'));
    answers.push(await ask(t!, PAYER, 'priced-cached'), await ask(t!, PAYER, 'priced-cached'));
    assert.deepEqual(answers.map((a) => a.status), Array(9).fill(200));
    // A stream is costed from the usage of its last chunk.
    const stream = await fetch(`${t!.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${PAYER}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'priced', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: CONTENT }] }),
    });
    assert.equal(stream.status, 200);
    assert.match(await stream.text(), /"completion_tokens":6/);
    // 7 priced requests, a stream, and the cached route's first answer; its second came from the cache.
    const served = 9;
    const usage = await waitFor(
      async () => {
        const found = await usageOf(t!, PAYER);
        return Number(found.totals?.requests ?? 0) === 10 ? found : undefined;
      },
      { timeoutMs: 10_000, what: 'the payer\'s 10 usage events' },
    );
    assert.equal(costOf(usage.totals), served * PRICED_COST);
    assert.deepEqual(usage.tenants?.map((g) => [g.name, costOf(g.totals)]), [['payer', served * PRICED_COST]]);
    assert.deepEqual(usage.routes?.map((g) => [g.name, costOf(g.totals)]), [
      ['priced', 8 * PRICED_COST],
      ['priced-cached', PRICED_COST],
    ]);
    // Each key's cost is its served requests' (the cache hit names no key).
    const keys = usage.keys ?? [];
    assert.ok(keys.length >= 1);
    for (const key of keys) assert.equal(costOf(key.totals), Number(key.totals?.requests) * PRICED_COST, key.name);
    assert.equal(keys.reduce((sum, key) => sum + costOf(key.totals), 0), served * PRICED_COST);
    // `keymesh usage` prints the same totals (GetUsage over gRPC).
    const printed = await cliJson<UsageJson>(t!, 'usage', '--tenant', 'payer');
    assert.equal(costOf(printed.totals), served * PRICED_COST);
  });

  it('serves a tenant with a daily cost quota until its spend reaches it exactly, then answers 429 until midnight naming the quota; the settled spend is the real costs\' sum', async function () {
    const nextUtcMidnightMs = Math.ceil((Date.now() + 1) / DAY_MS) * DAY_MS;
    const answers: Answer[] = [];
    for (let i = 0; i < 5; i++) answers.push(await ask(t!, SPENDER, 'metered', { max_tokens: COMPLETION_TOKENS }));
    assert.deepEqual(answers.map((a) => a.status), [200, 200, 200, 429, 429]);
    const denied = answers[4]!;
    assert.equal(denied.message?.startsWith('The daily cost quota of $0.000036 (UTC) for tenant "spender" is spent.'), true, denied.message);
    const expectedS = Math.ceil((nextUtcMidnightMs - Date.now()) / 1000);
    assert.ok(Math.abs(denied.retryAfterS - expectedS) <= 2, `retry-after ${denied.retryAfterS} s, expected about ${expectedS} s`);
    // Another tenant is not held back by it.
    assert.equal((await ask(t!, PAYER, 'metered', { max_tokens: COMPLETION_TOKENS })).status, 200);

    const { keys } = await limiter!.getKeyState({ poolId: 'tenant/spender/cost' });
    const quota = keys[0]!.calendarQuotas[0]!;
    assert.deepEqual(
      { unit: quota.unit, limit: quota.limit, period: quota.period, timeZone: quota.timeZone, used: quota.used },
      { unit: QuotaUnit.COST_MICRO_USD, limit: BigInt(3 * QUOTA_COST), period: QuotaPeriod.DAY, timeZone: 'UTC', used: BigInt(3 * QUOTA_COST) },
    );
    // The Redis store maps Redis's clock to the limiter's, so its midnight may be off by that skew (a ms or so).
    assert.ok(Math.abs(timestampMs(quota.resetsAt!) - nextUtcMidnightMs) <= 5, `resets at ${timestampMs(quota.resetsAt!)}, midnight is ${nextUtcMidnightMs}`);
    const usage = await waitFor(
      async () => {
        const found = await usageOf(t!, SPENDER);
        return Number(found.totals?.requests ?? 0) === 5 ? found : undefined;
      },
      { timeoutMs: 10_000, what: 'the spender\'s 5 usage events' },
    );
    assert.equal(costOf(usage.totals), 3 * QUOTA_COST, 'denied requests cost nothing');

    // `keymesh limits --tenant` shows the cost quota's pool with the tenant's.
    const printed = await cliJson<{ keys: { poolId: string; calendarQuotas: { unit: string; used: string; limit: string }[] }[] }>(t!, 'limits', '--tenant', 'spender');
    assert.deepEqual(
      printed.keys.map((k) => [k.poolId, k.calendarQuotas.map((q) => [q.unit, q.used, q.limit])]),
      [['tenant/spender/cost', [['QUOTA_UNIT_COST_MICRO_USD', String(3 * QUOTA_COST), String(3 * QUOTA_COST)]]]],
    );
  });

  it('settles a cost quota\'s reservation (the estimated prompt at the input price) to the real cost', async function () {
    for (let i = 0; i < 2; i++) assert.equal((await ask(t!, SETTLER, 'priced', { max_tokens: COMPLETION_TOKENS })).status, 200);
    const quota = await waitFor(
      async () => {
        const found = (await limiter!.getKeyState({ poolId: 'tenant/settler/cost' })).keys[0]!.calendarQuotas[0]!;
        return found.used === BigInt(2 * PRICED_COST) ? found : undefined;
      },
      { timeoutMs: 5_000, what: 'the settler\'s spend settled to 2 × 36 micro-USD' },
    );
    assert.equal(quota.limit, 1_000_000n);
  });

  it('reserves a tenant\'s cost at the dearest target of the route, so a quota that fits the real cost but not the dearest estimate turns the next request away', async function () {
    const first = await ask(t!, FRUGAL, 'two-prices', { max_tokens: COMPLETION_TOKENS });
    assert.equal(first.status, 200);
    // Served at output 2: its reservation of 24 settles to 12, leaving 12 of 24.
    await waitFor(
      async () => ((await limiter!.getKeyState({ poolId: 'tenant/frugal/cost' })).keys[0]!.calendarQuotas[0]!.used === BigInt(QUOTA_COST) ? true : undefined),
      { timeoutMs: 5_000, what: 'the frugal tenant\'s first request settled to 12 micro-USD' },
    );
    // The next would cost 12 again, but reserves 6 × 4 = 24, which no longer fits.
    const second = await ask(t!, FRUGAL, 'two-prices', { max_tokens: COMPLETION_TOKENS });
    assert.equal(second.status, 429, second.message);
  });

  it('holds a pool total\'s cost quota over every route on the pool, priced at the target tried', async function () {
    const answers: Answer[] = [];
    // Two routes on the pool spend its one quota: the third request is refused on either.
    for (const route of ['pooled', 'pooled-too', 'pooled']) answers.push(await ask(t!, PAYER, route, { max_tokens: COMPLETION_TOKENS }));
    assert.deepEqual(answers.map((a) => a.status), [200, 200, 429]);
    assert.equal(answers[2]!.message?.startsWith('The daily cost quota of $0.000024 (UTC) for the total of pool "capped" is spent.'), true, answers[2]!.message);
    const { keys } = await limiter!.getKeyState({ poolId: 'pool/capped/cost' });
    assert.equal(keys[0]!.calendarQuotas[0]!.used, BigInt(2 * QUOTA_COST));
  });

  it('turns away a request whose completion allowance alone could cost more than the whole quota, saying so', async function () {
    // No max_tokens: the route's default of 1024 at output 2 reserves 2048 micro-USD, more than the quota of 36.
    const answer = await ask(t!, TINY, 'metered');
    assert.equal(answer.status, 429);
    assert.equal(answer.message, 'This request may cost more than the whole daily cost quota of $0.000036 (UTC) for tenant "tiny"; lower its max_tokens.');
    // With an allowance that fits, it is served.
    const fitting = await ask(t!, TINY, 'metered', { max_tokens: COMPLETION_TOKENS });
    assert.equal(fitting.status, 200, fitting.message);
  });
});
