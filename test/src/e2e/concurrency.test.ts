import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { RouterService } from '@keymesh/proto/router/v1/router';
import { closeRpcClient, createRpcClient, type RpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { edgePort, redisForTests, spawnNode, waitFor, type ChildHandle, type ExternalServer } from '@keymesh/testing';
import { configYaml, limiterClient, secretOf, startTestMesh, VIRTUAL_KEY, type TestMesh, type TestMeshOptions } from './harness';

const KEYMESH_BIN = resolve(__dirname, '../../../services/cli/bin/keymesh.js');
const HOLD_TTL_MS = 3_000;
/** Eight chunks this far apart: a stream lasts about 2.4 s unless cut. */
const CHUNK_DELAY_MS = 300;
const WAIT_ROUTE = 'gpt-wait';
/** One round, no retry: a denial is the caller's 429 at once. */
const ONCE_ROUTE = 'gpt-once';

function post(baseUrl: string, stream: boolean, model = 'gpt-4o-mini', signal?: AbortSignal, timeoutMs?: number): Promise<Response> {
  return fetch(`${baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json', ...(timeoutMs === undefined ? {} : { 'x-keymesh-timeout': String(timeoutMs) }) },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], ...(stream ? { stream: true } : {}) }),
    ...(signal ? { signal } : {}),
  });
}

/** A stream that has begun (its first bytes read); `rest` reads it to the end, `leave` hangs up. */
async function openStream(baseUrl: string): Promise<{ rest: () => Promise<string>; leave: () => void }> {
  const controller = new AbortController();
  const response = await post(baseUrl, true, 'gpt-4o-mini', controller.signal);
  assert.equal(response.status, 200, `stream refused: ${response.status}`);
  const reader = response.body!.getReader();
  await reader.read();
  const decoder = new TextDecoder();
  return {
    rest: async () => {
      let text = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return text;
        text += decoder.decode(value);
      }
    },
    leave: () => controller.abort(),
  };
}

describe('per-key concurrency limits held across replicas', function () {
  this.timeout(60_000);
  let redis: ExternalServer;
  let t: TestMesh;
  let limiter: RpcClient<typeof LimiterService>;
  const prefix = `keymesh-concurrency-${randomBytes(6).toString('hex')}`;
  const options: TestMeshOptions = {
    mockKeys: [{}],
    declaredLimits: ['{ concurrency: 2 }'],
    streamChunkDelayMs: CHUNK_DELAY_MS,
    extraRoutes: [
      `  ${WAIT_ROUTE}: { targets: [ { pool: main, model: gpt-4o-mini } ], max_wait: 10s }`,
      `  ${ONCE_ROUTE}: { targets: [ { pool: main, model: gpt-4o-mini } ], retry: { attempts: 1 } }`,
    ].join('\n'),
  };
  const open: { leave: () => void }[] = [];

  async function holdsInFlight(): Promise<number> {
    const { keys } = await limiter.getKeyState({ poolId: 'main' });
    const k1 = keys.find((k) => k.keyId === 'k1')!;
    assert.equal(k1.concurrencyLimit, 2);
    return k1.holdsInFlight;
  }

  before(async function () {
    redis = await redisForTests();
    t = await startTestMesh({
      ...options,
      env: { REDIS_URL: redis.url, KEYMESH_REDIS_PREFIX: prefix, KEYMESH_LIMITER_HOLD_TTL_MS: String(HOLD_TTL_MS) },
    });
    limiter = limiterClient(t);
  });

  afterEach(async function () {
    for (const stream of open.splice(0)) stream.leave();
    await waitFor(async () => (await holdsInFlight()) === 0, { timeoutMs: HOLD_TTL_MS + 2_000, what: 'every hold to come back' });
  });

  after(async function () {
    if (limiter) closeRpcClient(limiter);
    await t?.stop();
    await redis?.stop();
  });

  it('sends no third request upstream while two streams hold the key, and frees a slot the moment a stream ends', async function () {
    const first = await openStream(t.baseUrl);
    const second = await openStream(t.baseUrl);
    open.push(first, second);
    assert.equal(await holdsInFlight(), 2);
    const upstreamBefore = t.mock.stats().requests;
    const third = await post(t.baseUrl, false, ONCE_ROUTE);
    assert.equal(third.status, 429);
    assert.ok(Number(third.headers.get('retry-after')) >= 1, 'an honest retry-after');
    await third.text();
    assert.equal(t.mock.stats().requests, upstreamBefore, 'the third request never reached the provider');

    // A waiting request is served as soon as a stream ends, not at the hold's expiry.
    const waiting = post(t.baseUrl, false, WAIT_ROUTE);
    const endedMs = await first.rest().then(() => Date.now());
    const served = await waiting;
    assert.equal(served.status, 200);
    await served.text();
    assert.ok(Date.now() - endedMs < HOLD_TTL_MS / 2, `served ${Date.now() - endedMs} ms after a stream ended`);
    await second.rest();
    await waitFor(async () => (await holdsInFlight()) === 0, { timeoutMs: 1_000, what: 'both holds to be released when their streams end' });
  });

  it('frees the slot of a client that hangs up mid-stream at once', async function () {
    const staying = await openStream(t.baseUrl);
    const leaving = await openStream(t.baseUrl);
    open.push(staying);
    assert.equal(await holdsInFlight(), 2);
    leaving.leave();
    const leftMs = Date.now();
    // Well before the stream would have ended (2.4 s) or its hold expired (3 s).
    await waitFor(async () => (await holdsInFlight()) === 1, { timeoutMs: 1_000, what: 'the hung-up stream to give its slot back' });
    const next = await post(t.baseUrl, false);
    assert.equal(next.status, 200, 'the next request is admitted at once');
    await next.text();
    assert.ok(Date.now() - leftMs < CHUNK_DELAY_MS * 4, `admitted ${Date.now() - leftMs} ms after the hang-up`);
  });

  it('frees the slot of a gRPC stream the moment its call is cancelled', async function () {
    const router = createRpcClient(RouterService, t.grpcAddress, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 10_000 });
    const call = new AbortController();
    try {
      const stream = router.chatStream({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'cancel me' }] }, { headers: { authorization: `Bearer ${VIRTUAL_KEY}` }, signal: call.signal });
      const iterator = stream[Symbol.asyncIterator]();
      await iterator.next();
      assert.equal(await holdsInFlight(), 1);
      call.abort();
      const cancelledMs = Date.now();
      await iterator.next().catch(() => undefined);
      await waitFor(async () => (await holdsInFlight()) === 0, { timeoutMs: 1_000, what: 'the cancelled call to give its slot back' });
      assert.ok(Date.now() - cancelledMs < CHUNK_DELAY_MS * 4, `freed ${Date.now() - cancelledMs} ms after the cancel`);
    } finally {
      closeRpcClient(router);
    }
  });

  it('frees the slot of a stream cut by its deadline at the deadline', async function () {
    const response = await post(t.baseUrl, true, 'gpt-4o-mini', undefined, 600);
    assert.equal(response.status, 200);
    const startedMs = Date.now();
    assert.equal(await holdsInFlight(), 1);
    const text = await response.text();
    assert.match(text, /"error"/, 'the stream ends with an error event at its deadline');
    // Long before the stream's own end (2.4 s) or its hold's expiry (3 s).
    await waitFor(async () => (await holdsInFlight()) === 0, { timeoutMs: 500, what: 'the deadline to give the slot back' });
    assert.ok(Date.now() - startedMs < CHUNK_DELAY_MS * 5, `freed ${Date.now() - startedMs} ms after the stream began`);
  });

  describe('a router that dies holding slots', function () {
    let dir: string;
    let up: ChildHandle | undefined;

    before(async function () {
      dir = await mkdtemp(join(tmpdir(), 'keymesh-concurrency-'));
    });

    after(async function () {
      await up?.stop('SIGKILL', 5_000);
      await rm(dir, { recursive: true, force: true });
    });

    it('keeps its slots until their holds expire, and frees them then', async function () {
      const configPath = join(dir, 'keymesh.yaml');
      await writeFile(configPath, configYaml(t.mock.url, options));
      up = spawnNode(KEYMESH_BIN, ['up', '--config', configPath], {
        env: {
          KEYMESH_HTTP_PORT: '0',
          KEYMESH_GRPC_PORT: '0',
          NATS_URL: undefined,
          REDIS_URL: redis.url,
          KEYMESH_REDIS_PREFIX: prefix,
          KEYMESH_LIMITER_HOLD_TTL_MS: String(HOLD_TTL_MS),
          KEYMESH_LOG_LEVEL: 'warn',
        },
      });
      const otherBaseUrl = `http://127.0.0.1:${await edgePort(up)}/v1`;
      await openStream(otherBaseUrl);
      await openStream(otherBaseUrl);
      assert.equal(await holdsInFlight(), 2, 'the other replica holds both slots, in the shared store');
      await up.stop('SIGKILL', 5_000);
      const killedMs = Date.now();
      up = undefined;

      // Nobody releases them: this replica is refused while they last.
      const refused = await post(t.baseUrl, false, ONCE_ROUTE);
      assert.equal(refused.status, 429);
      await refused.text();
      // A hold lasts its TTL from its grant or last renewal (a third of the TTL apart at most, plus a tick).
      const freedMs = await waitFor(async () => ((await holdsInFlight()) === 0 ? Date.now() : undefined), {
        timeoutMs: HOLD_TTL_MS + 2_000,
        what: 'the dead router\'s holds to expire',
      });
      assert.ok(freedMs - killedMs >= HOLD_TTL_MS / 2 - 100, `freed ${freedMs - killedMs} ms after the kill, before the holds could have expired`);
      const served = await post(t.baseUrl, false);
      assert.equal(served.status, 200);
      await served.text();
    });
  });
});

describe('a request that fails over holds one key at a time', function () {
  this.timeout(30_000);
  let t: TestMesh;
  let limiter: RpcClient<typeof LimiterService>;

  before(async function () {
    t = await startTestMesh({ mockKeys: [{}, {}], declaredLimits: ['{ concurrency: 1 }', '{ concurrency: 1 }'], streamChunkDelayMs: CHUNK_DELAY_MS });
    limiter = limiterClient(t);
  });

  after(async function () {
    if (limiter) closeRpcClient(limiter);
    await t?.stop();
  });

  it('gives the refused key its slot back before streaming from the next', async function () {
    // Both keys are free, so the first try takes k1 (ties go to config order), which the provider refuses.
    t.mock.revokeKey(secretOf(0));
    const stream = await openStream(t.baseUrl);
    const { keys } = await limiter.getKeyState({ poolId: 'main' });
    const inFlight = Object.fromEntries(keys.map((k) => [k.keyId, k.holdsInFlight]));
    assert.deepEqual(inFlight, { k1: 0, k2: 1 }, 'only the key now serving the stream is held');
    assert.equal(t.mock.stats(secretOf(0)).unauthorized, 1, 'the stream did try k1 first');
    await stream.rest();
    await waitFor(async () => (await limiter.getKeyState({ poolId: 'main' })).keys.every((k) => k.holdsInFlight === 0), { timeoutMs: 1_000, what: 'k2 to be released' });
  });
});
