import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startMockProvider, type MockProvider } from '@keymesh/mock-provider';
import { RouterService } from '@keymesh/proto/router/v1/router';
import { closeRpcClient, createRpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { waitFor } from '@keymesh/testing';
import { secretOf, startTestMesh, VIRTUAL_KEY, type TestMesh, type TestMeshOptions } from './harness';

const SIDE_SECRET = 'side-secret-1';
const SORRY = 'Sorry, we are busy. Please try again in a minute.';

/**
 * The harness mesh plus a second provider ("side", its own mock server and
 * pool), so routes can fail over, or spread, across providers and models.
 */
async function startTwoProviderMesh(routes: string, options: TestMeshOptions = {}): Promise<{ t: TestMesh; side: MockProvider }> {
  const side = await startMockProvider({ keys: [{ secret: SIDE_SECRET }] });
  try {
    const t = await startTestMesh({
      ...options,
      extraProviders: `  side: { kind: openai, base_url: ${side.url} }`,
      extraPools: `  side:\n    provider: side\n    keys:\n      - { id: s1, secret: ${SIDE_SECRET} }`,
      extraRoutes: routes,
    });
    return { t, side };
  } catch (err) {
    await side.close();
    throw err;
  }
}

describe('routing strategies and degraded answers', function () {
  let t: TestMesh | undefined;
  let side: MockProvider | undefined;
  let client: OpenAI;

  const start = async (routes: string, options: TestMeshOptions = {}): Promise<TestMesh> => {
    ({ t, side } = await startTwoProviderMesh(routes, options));
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    return t;
  };
  const ask = (model: string, content: string) => client.chat.completions.create({ model, messages: [{ role: 'user', content }] }).withResponse();
  const revokeMain = (mesh: TestMesh) => [0, 1, 2].forEach((i) => mesh.mock.revokeKey(secretOf(i)));

  afterEach(async function () {
    await t?.stop();
    await side?.close();
    t = undefined;
    side = undefined;
  });

  it('spreads first tries across targets by weight (3:1)', async function () {
    const mesh = await start('  spread: { strategy: weighted, targets: [ { pool: main, model: gpt-4o-mini, weight: 3 }, { pool: side, model: gpt-4o, weight: 1 } ] }');
    const requests = 200;
    for (let i = 0; i < requests; i++) await ask('spread', `spread ${i}`);
    const main = mesh.mock.stats().ok;
    assert.equal(main + side!.stats().ok, requests);
    // 3:1 puts 150 on main; five standard deviations (about 31) either side keeps this from flaking.
    assert.ok(main >= 120 && main <= 180, `main served ${main} of ${requests}`);
  });

  it('prefers the target with the lower time to first byte, after measuring each once', async function () {
    const mesh = await start('  quick: { strategy: latency, targets: [ { pool: side, model: gpt-4o }, { pool: main, model: gpt-4o-mini } ] }');
    side!.setLatency(300);
    const served: string[] = [];
    for (let i = 0; i < 10; i++) {
      const { response } = await ask('quick', `quick ${i}`);
      served.push(response.headers.get('x-keymesh-provider') ?? '?');
    }
    // The slow side comes first in the config and gets its one sample; then the fast one takes over.
    assert.deepEqual(served.slice(2), Array(8).fill('mock'), served.join(' '));
    assert.equal(side!.stats().ok, 1);
    assert.equal(mesh.mock.stats().ok, 9);
  });

  it('sends a request to the target with the fewest calls in flight, and counts each call down when it ends', async function () {
    const mesh = await start('  calm: { strategy: least-busy, targets: [ { pool: side, model: gpt-4o }, { pool: main, model: gpt-4o-mini } ] }');
    side!.setLatency(1_000);
    const slow = ask('calm', 'slow one');
    await waitFor(() => side!.stats().requests === 1, { timeoutMs: 5_000, what: 'the first request to reach the side provider' });
    // The side provider is busy with the first request: the second goes to the idle one.
    const second = await ask('calm', 'second');
    assert.equal(second.response.headers.get('x-keymesh-provider'), 'mock');
    assert.equal((await slow).response.headers.get('x-keymesh-provider'), 'side');
    // Every call has ended, so each tie goes to config order again.
    side!.setLatency(0);
    for (const content of ['third', 'fourth', 'fifth']) {
      const { response } = await ask('calm', content);
      assert.equal(response.headers.get('x-keymesh-provider'), 'side', content);
    }
    assert.equal(mesh.mock.stats().ok, 1);
  });

  it('fails over to another provider and model, which is what is sent upstream and reported', async function () {
    const mesh = await start('  cross: { targets: [ { pool: main, model: gpt-4o-mini }, { pool: side, model: gpt-4o } ] }');
    revokeMain(mesh);
    const { data, response } = await ask('cross', 'cross over');
    assert.equal(data.model, 'gpt-4o', 'the provider must have been asked for the target\'s model');
    assert.equal(response.headers.get('x-keymesh-provider'), 'side');
    assert.equal(response.headers.get('x-keymesh-model'), 'gpt-4o');
    assert.equal(response.headers.get('x-keymesh-key-id'), 's1');
    assert.equal(response.headers.get('x-keymesh-degraded'), null);
  });

  it('serves from the degraded target only once the primary is rate limited, and says so', async function () {
    await start(
      '  backed: { targets: [ { pool: main, model: gpt-4o-mini } ], retry: { attempts: 2, backoff: 10ms }, degraded: { target: { pool: side, model: gpt-4o } } }',
      { mockKeys: [{ limits: [{ requests: 1, perMs: 60_000 }] }] },
    );
    const first = await ask('backed', 'first');
    assert.equal(first.response.headers.get('x-keymesh-provider'), 'mock');
    assert.equal(first.response.headers.get('x-keymesh-degraded'), null);
    assert.equal(side!.stats().requests, 0);

    const second = await ask('backed', 'second');
    assert.equal(second.data.model, 'gpt-4o');
    assert.match(second.data.choices[0]!.message.content ?? '', /second/);
    assert.equal(second.response.headers.get('x-keymesh-degraded'), 'true');
    assert.equal(second.response.headers.get('x-keymesh-provider'), 'side');
    assert.equal(second.response.headers.get('x-keymesh-model'), 'gpt-4o');
  });

  it('answers with the static degraded answer, plain, streamed and over gRPC, and counts it apart in usage', async function () {
    const mesh = await start(`  sorry: { targets: [ { pool: main, model: gpt-4o-mini } ], degraded: { answer: "${SORRY}" } }`);
    revokeMain(mesh);

    const plain = await ask('sorry', 'anyone there?');
    assert.equal(plain.response.status, 200);
    assert.equal(plain.response.headers.get('x-keymesh-degraded'), 'true');
    assert.equal(plain.data.choices[0]!.message.content, SORRY);
    assert.equal(plain.data.choices[0]!.finish_reason, 'stop');
    assert.deepEqual(plain.data.usage, { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });

    const { data: stream, response } = await client.chat.completions
      .create({ model: 'sorry', messages: [{ role: 'user', content: 'stream?' }], stream: true, stream_options: { include_usage: true } })
      .withResponse();
    assert.equal(response.headers.get('x-keymesh-degraded'), 'true');
    assert.match(response.headers.get('content-type') ?? '', /text\/event-stream/);
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      usage = chunk.usage ?? usage;
    }
    assert.equal(text, SORRY);
    assert.deepEqual(usage, { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });

    const router = createRpcClient(RouterService, mesh.grpcAddress, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 10_000 });
    try {
      let degraded: string | undefined;
      const answer = await router.chat(
        { model: 'sorry', messages: [{ role: 'user', content: 'grpc?' }] },
        { headers: { authorization: `Bearer ${VIRTUAL_KEY}` }, onTrailers: (md) => (degraded = String(md.get('x-keymesh-degraded')[0])) },
      );
      assert.equal(answer.choices[0]!.message?.content, SORRY);
      assert.equal(degraded, 'true');
      let streamed = '';
      for await (const delta of router.chatStream({ model: 'sorry', messages: [{ role: 'user', content: 'grpc stream?' }] }, { headers: { authorization: `Bearer ${VIRTUAL_KEY}` } })) {
        streamed += delta.contentDelta;
      }
      assert.equal(streamed, SORRY);
    } finally {
      closeRpcClient(router);
    }

    // No provider answered: usage counts these four apart from served requests.
    const usageUrl = `${mesh.baseUrl}/usage`;
    await waitFor(
      async () => {
        const body = (await (await fetch(usageUrl, { headers: { authorization: `Bearer ${VIRTUAL_KEY}` } })).json()) as { totals?: { requests?: string; errors?: string } };
        return Number(body.totals?.requests ?? 0) >= 4 && Number(body.totals?.errors ?? 0) >= 4;
      },
      { timeoutMs: 10_000, what: 'four degraded answers counted apart in usage' },
    );
  });

  it('passes the caller\'s own mistake through instead of the degraded answer', async function () {
    await start(`  sorry: { targets: [ { pool: main, model: gpt-4o-mini } ], degraded: { answer: "${SORRY}" } }`);
    await assert.rejects(
      client.chat.completions.create({ model: 'sorry', messages: [{ role: 'user', content: 'zero' }], max_tokens: 0 }),
      (err: unknown) => {
        assert.ok(err instanceof OpenAI.BadRequestError, String(err));
        assert.equal(err.headers?.get('x-keymesh-degraded') ?? null, null);
        return true;
      },
    );
  });

  it('never caches or replays a static degraded answer, so the provider serves once it recovers', async function () {
    const mesh = await start(`  sorry-cached: { targets: [ { pool: main, model: gpt-4o-mini } ], cache: { ttl: 5m }, retry: { attempts: 1 }, degraded: { answer: "${SORRY}" } }`, {
      mockKeys: [{ limits: [{ requests: 1, perMs: 1_000 }] }],
    });
    // Asked again under one Idempotency-Key, as a careful client retries.
    const askAgain = () =>
      client.chat.completions
        .create({ model: 'sorry-cached', messages: [{ role: 'user', content: 'same question' }] }, { headers: { 'idempotency-key': 'same-question' } })
        .withResponse();
    await ask('sorry-cached', 'warm up');
    const degraded = await askAgain();
    assert.equal(degraded.data.choices[0]!.message.content, SORRY);
    assert.equal(degraded.response.headers.get('x-keymesh-degraded'), 'true');
    // Once the key's window passes, the same question reaches the provider instead of a remembered apology.
    const answer = await waitFor(
      async () => {
        const { data } = await askAgain();
        return data.choices[0]!.message.content !== SORRY ? data.choices[0]!.message.content : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100, what: 'the provider to answer again' },
    );
    assert.match(answer ?? '', /same question/);
    assert.ok(mesh.mock.stats().ok >= 2);
  });
});
