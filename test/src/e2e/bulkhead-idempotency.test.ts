import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { redisForTests, waitFor, type ExternalServer } from '@keymesh/testing';
import { startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

async function chat(t: TestMesh, model: string, content: string, extra: Record<string, string> = {}, signal?: AbortSignal): Promise<Answer> {
  const response = await fetch(`${t.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json', ...extra },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
    ...(signal ? { signal } : {}),
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

describe('bulkheads at the HTTP edge', function () {
  let t: TestMesh;

  before(async function () {
    t = await startTestMesh({
      extraRoutes: `  gpt-capped: { targets: [ { pool: main, model: gpt-4o-mini } ], max_concurrency: 2 }
  gpt-single: { targets: [ { pool: main, model: gpt-4o-mini } ], max_concurrency: 1 }`,
    });
  });
  after(async function () {
    await t?.stop();
  });
  afterEach(function () {
    t.mock.setLatency(0);
    t.mock.resetStats();
  });

  it('answers a flood on a capped route with 429s while another route serves every request', async function () {
    // Held in flight long enough that the whole flood arrives while the first two still hold their slots.
    t.mock.setLatency(1_000);
    const flood = Array.from({ length: 8 }, (_, i) => chat(t, 'gpt-capped', `flood ${i}`));
    const others = Array.from({ length: 8 }, (_, i) => chat(t, 'gpt-4o-mini', `other ${i}`));
    const [flooded, served] = await Promise.all([Promise.all(flood), Promise.all(others)]);

    assert.deepEqual(served.map((a) => a.status), Array(8).fill(200));
    assert.deepEqual(flooded.map((a) => a.status).sort(), [200, 200, 429, 429, 429, 429, 429, 429]);
    const rejected = flooded.find((a) => a.status === 429)!;
    assert.equal(rejected.headers.get('retry-after'), '1');
    const body = JSON.parse(rejected.text) as { error: { type: string; code: string; message: string } };
    assert.equal(body.error.type, 'rate_limit_error');
    assert.equal(body.error.code, 'concurrency_limit');
    // Rejected at the edge: only the two admitted requests reached the provider for this route.
    assert.equal(t.mock.stats().requests, 10);

    // Every slot came back when its response finished.
    t.mock.setLatency(0);
    const after = await Promise.all([chat(t, 'gpt-capped', 'after 1'), chat(t, 'gpt-capped', 'after 2')]);
    assert.deepEqual(after.map((a) => a.status), [200, 200]);
  });

  it('gives the slot back when the client hangs up mid-request', async function () {
    t.mock.setLatency(30_000);
    const controller = new AbortController();
    const abandoned = chat(t, 'gpt-single', 'abandoned', {}, controller.signal).catch((err: unknown) => err);
    await waitFor(() => t.mock.stats().requests >= 1, { timeoutMs: 5_000, what: 'the first request to reach the provider' });
    assert.equal((await chat(t, 'gpt-single', 'while held')).status, 429);
    controller.abort();
    await abandoned;
    t.mock.setLatency(0);
    const answer = await waitFor(
      async () => {
        const a = await chat(t, 'gpt-single', 'after hang-up');
        return a.status === 429 ? undefined : a;
      },
      { timeoutMs: 5_000, what: 'the slot to be released' },
    );
    assert.equal(answer.status, 200);
  });
});

describe('Idempotency-Key at the HTTP edge', function () {
  let t: TestMesh;

  before(async function () {
    t = await startTestMesh();
  });
  after(async function () {
    await t?.stop();
  });
  afterEach(function () {
    t.mock.setLatency(0);
    t.mock.resetStats();
  });

  it('calls the provider once for two identical requests with one key, in flight together, and returns the same body', async function () {
    t.mock.setLatency(300);
    const key = { 'idempotency-key': 'order-1' };
    const [a, b] = await Promise.all([chat(t, 'gpt-4o-mini', 'charge once', key), chat(t, 'gpt-4o-mini', 'charge once', key)]);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(a.text, b.text);
    assert.equal(t.mock.stats().requests, 1);
    const replays = [a, b].filter((x) => x.headers.get('x-keymesh-idempotent-replay') === 'true');
    assert.equal(replays.length, 1);
    assert.equal(replays[0]!.headers.get('content-type'), 'application/json');
    assert.notEqual(a.headers.get('x-keymesh-request-id'), b.headers.get('x-keymesh-request-id'));
    // The replay says how the first answer was served, once per header.
    const original = replays[0] === a ? b : a;
    for (const name of ['x-keymesh-provider', 'x-keymesh-model', 'x-keymesh-key-id', 'content-length']) {
      assert.equal(replays[0]!.headers.get(name), original.headers.get(name), name);
    }

    // A later retry is answered from memory too.
    const retry = await chat(t, 'gpt-4o-mini', 'charge once', key);
    assert.equal(retry.text, a.text);
    assert.equal(retry.headers.get('x-keymesh-idempotent-replay'), 'true');
    assert.equal(t.mock.stats().requests, 1);
  });

  it('answers 422 to a different body under a key already used', async function () {
    const key = { 'idempotency-key': 'order-2' };
    assert.equal((await chat(t, 'gpt-4o-mini', 'first body', key)).status, 200);
    const other = await chat(t, 'gpt-4o-mini', 'second body', key);
    assert.equal(other.status, 422);
    const body = JSON.parse(other.text) as { error: { type: string; code: string } };
    assert.equal(body.error.type, 'invalid_request_error');
    assert.equal(body.error.code, 'idempotency_key_reused');
    assert.equal(t.mock.stats().requests, 1);
  });

  it('calls the provider for every request without the header', async function () {
    await chat(t, 'gpt-4o-mini', 'same');
    await chat(t, 'gpt-4o-mini', 'same');
    assert.equal(t.mock.stats().requests, 2);
  });
});

describe('Idempotency-Key across router replicas sharing Redis', function () {
  let redis: ExternalServer;
  let a: TestMesh;
  let b: TestMesh;

  before(async function () {
    redis = await redisForTests();
    // Both meshes on one prefix, as two replicas of one deployment; unique to this run, never flushed.
    const env = { REDIS_URL: redis.url, KEYMESH_REDIS_PREFIX: `e2e-idem-${randomBytes(6).toString('hex')}` };
    a = await startTestMesh({ env });
    b = await startTestMesh({ env });
  });
  after(async function () {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  it('calls the provider once when the same key reaches two replicas at once, and replays that answer to a later retry', async function () {
    a.mock.setLatency(300);
    b.mock.setLatency(300);
    const key = { 'idempotency-key': 'replicated-order-1' };
    const [onA, onB] = await Promise.all([chat(a, 'gpt-4o-mini', 'charge once', key), chat(b, 'gpt-4o-mini', 'charge once', key)]);
    assert.equal(onA.status, 200);
    assert.equal(onB.status, 200);
    assert.equal(onA.text, onB.text);
    assert.equal(a.mock.stats().requests + b.mock.stats().requests, 1, 'one provider call across both replicas');
    assert.equal([onA, onB].filter((x) => x.headers.get('x-keymesh-idempotent-replay') === 'true').length, 1);

    const retry = await chat(b, 'gpt-4o-mini', 'charge once', key);
    assert.equal(retry.text, onA.text);
    assert.equal(retry.headers.get('x-keymesh-idempotent-replay'), 'true');
    assert.equal(a.mock.stats().requests + b.mock.stats().requests, 1);
    assert.equal((await chat(a, 'gpt-4o-mini', 'another body', key)).status, 422);
  });
});
