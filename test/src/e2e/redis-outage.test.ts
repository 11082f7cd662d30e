import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startPrivateRedis, waitFor, type PrivateServer } from '@keymesh/testing';
import { startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

// Every request carries this deadline: an outage may deny it, never hold it past it.
const DEADLINE_MS = 2_000;
// What "ends within its deadline" allows for this process's own event loop under load.
const SLACK_MS = 500;

interface Outcome {
  status: number;
  retryAfter: string | null;
  tookMs: number;
}

async function chat(baseUrl: string): Promise<Outcome> {
  const started = Date.now();
  const response = await fetch(`${baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${VIRTUAL_KEY}`, 'x-keymesh-timeout': `${DEADLINE_MS}ms` },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
  });
  await response.arrayBuffer();
  return { status: response.status, retryAfter: response.headers.get('retry-after'), tookMs: Date.now() - started };
}

/** `callers` loops of back-to-back requests until `stop()`; every outcome is kept. */
function load(baseUrl: string, callers: number): { outcomes: Outcome[]; stop(): Promise<void> } {
  const outcomes: Outcome[] = [];
  let running = true;
  const loops = Array.from({ length: callers }, async () => {
    while (running) outcomes.push(await chat(baseUrl));
  });
  return {
    outcomes,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

function assertEachEndedInTime(outcomes: readonly Outcome[]): void {
  const late = outcomes.filter((o) => o.tookMs > DEADLINE_MS + SLACK_MS);
  assert.deepEqual(late, [], 'no request may outlive its deadline while Redis is down');
  const unexpected = outcomes.filter((o) => o.status !== 200 && o.status !== 429);
  assert.deepEqual(unexpected, [], 'an outage answers 200 or 429, never a 5xx or a hang');
  for (const denied of outcomes.filter((o) => o.status === 429)) assert.ok(Number(denied.retryAfter) >= 1, 'a denial says when to retry');
}

describe('the mesh while its Redis goes down and comes back', function () {
  this.timeout(60_000);
  let redis: PrivateServer;
  let testMesh: TestMesh | undefined;

  async function start(mode: 'closed' | 'open', declaredLimit: string): Promise<TestMesh> {
    redis = await startPrivateRedis();
    testMesh = await startTestMesh({
      mockKeys: [{}],
      declaredLimits: [declaredLimit],
      env: {
        REDIS_URL: redis.url,
        KEYMESH_REDIS_PREFIX: `outage-${randomBytes(4).toString('hex')}`,
        KEYMESH_LIMITER_REDIS_DOWN: mode,
        KEYMESH_LIMITER_REPLICAS: '2',
      },
    });
    return testMesh;
  }

  afterEach(async () => {
    await testMesh?.stop();
    testMesh = undefined;
    await redis?.stop();
  });

  it('fails closed: once leases already granted run out, denies every request at once with retry-after, and serves again when Redis is back', async () => {
    const { baseUrl, mock } = await start('closed', '{ requests: 1000, per: 1s }');
    assert.equal((await chat(baseUrl)).status, 200);

    const traffic = load(baseUrl, 8);
    await waitFor(() => traffic.outcomes.length >= 50 || undefined, { timeoutMs: 10_000, what: 'load before the outage' });
    await redis.kill();
    // Slots leased before the outage may still be spent: a lease lasts at most a second.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const upstreamBefore = mock.stats().requests;
    const fromOutage = traffic.outcomes.length;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const duringOutage = traffic.outcomes.slice(fromOutage);
    assert.equal(mock.stats().requests, upstreamBefore, 'closed: nothing reaches the provider while Redis is down');
    assert.ok(duringOutage.length > 0 && duringOutage.every((o) => o.status === 429), `closed: every request is denied, got ${[...new Set(duringOutage.map((o) => o.status))].join(',')}`);

    await redis.restart();
    const recoveredAt = traffic.outcomes.length;
    await waitFor(() => traffic.outcomes.slice(recoveredAt).some((o) => o.status === 200) || undefined, { timeoutMs: 15_000, what: 'a 200 once Redis is back' });
    await traffic.stop();
    assertEachEndedInTime(traffic.outcomes);
  });

  it('fails open to this replica\'s share of the limit: serves within it, never past it, and goes back to Redis when it returns', async () => {
    // 10 per 5 s over two replicas: this one may admit 5 per 5 s on its own while Redis is down.
    const { baseUrl, mock } = await start('open', '{ requests: 10, per: 5s }');
    await redis.kill();
    // Whatever was leased before the outage lapses first.
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    const upstreamBefore = mock.stats().requests;
    const traffic = load(baseUrl, 4);
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    await traffic.stop();
    const served = traffic.outcomes.filter((o) => o.status === 200).length;
    assert.equal(served, 5, 'open: exactly this replica\'s share of the window is served');
    assert.equal(mock.stats().requests - upstreamBefore, 5);
    assertEachEndedInTime(traffic.outcomes);

    await redis.restart();
    await waitFor(async () => ((await chat(baseUrl)).status === 200 ? true : undefined), { timeoutMs: 15_000, intervalMs: 200, what: 'a 200 once Redis is back' });
    // The local share is spent for this window, so 7 more served at once can only be Redis deciding
    // again (its windows came back empty: nothing was admitted there before the outage).
    const more = await Promise.all(Array.from({ length: 7 }, () => chat(baseUrl)));
    assert.deepEqual(more.map((o) => o.status), Array(7).fill(200), 'back on Redis: its full limit, not the local share');
  });
});
