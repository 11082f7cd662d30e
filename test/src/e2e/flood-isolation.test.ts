import assert from 'node:assert/strict';
import { startMockProvider, type MockProvider } from '@keymesh/mock-provider';
import { startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

interface Answer {
  readonly status: number;
  readonly retryAfter: string | null;
  readonly elapsedMs: number;
}

async function chat(t: TestMesh, model: string, content: string): Promise<Answer> {
  const started = performance.now();
  const response = await fetch(`${t.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
  });
  await response.text();
  return { status: response.status, retryAfter: response.headers.get('retry-after'), elapsedMs: performance.now() - started };
}

function p50(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Route B at a light rate: one request at a time, `count` of them; their latencies in ms. */
async function measureB(t: TestMesh, count: number, label: string): Promise<number[]> {
  const latencies: number[] = [];
  for (let i = 0; i < count; i++) {
    const answer = await chat(t, 'route-b', `${label} ${i}`);
    assert.equal(answer.status, 200, `route B answered ${answer.status} (${label})`);
    latencies.push(answer.elapsedMs);
  }
  return latencies;
}

const SLOW_LATENCY_MS = 400;
const ROUTE_A_CAP = 4;
const FLOOD_BURST = 6;

describe('a flood on one route', function () {
  this.timeout(60_000);
  let slow: MockProvider;
  let t: TestMesh;

  before(async function () {
    // Route A's provider is slow, so its requests pile up; route B has a provider of its own and no cap.
    slow = await startMockProvider({ keys: [{ secret: 'slow-secret' }], latencyMs: SLOW_LATENCY_MS });
    t = await startTestMesh({
      extraProviders: `  slow: { kind: openai, base_url: ${slow.url} }`,
      extraPools: `  slowpool: { provider: slow, keys: [ { id: s1, secret: slow-secret } ] }`,
      extraRoutes: `  route-a: { targets: [ { pool: slowpool, model: gpt-4o-mini } ], max_concurrency: ${ROUTE_A_CAP} }
  route-b: { targets: [ { pool: main, model: gpt-4o-mini } ] }`,
    });
  });
  after(async function () {
    await t?.stop();
    await slow?.close();
  });

  it('leaves another route at its usual latency, and sheds the excess with 429 and retry-after at once', async function () {
    // Warm up both routes (connections, leases, compiled code) before the baseline.
    await measureB(t, 10, 'warm-up');
    assert.equal((await chat(t, 'route-a', 'warm-up')).status, 200);

    const baseline = await measureB(t, 40, 'baseline');

    // The flood: with every request to B, a burst of requests to A that nobody waits for first, so A
    // always has more arrivals than its cap while B is measured. Paced by B rather than by a tight loop:
    // the flood must swamp A's bulkhead, not the CPU this test shares with the mesh.
    const flood: Promise<Answer>[] = [];
    const during: number[] = [];
    for (let i = 0; i < 40; i++) {
      for (let j = 0; j < FLOOD_BURST; j++) flood.push(chat(t, 'route-a', `flood ${i}/${j}`));
      const answer = await chat(t, 'route-b', `during the flood ${i}`);
      assert.equal(answer.status, 200, `route B answered ${answer.status} during the flood`);
      during.push(answer.elapsedMs);
    }
    const floodAnswers = await Promise.all(flood);

    const baselineP50 = p50(baseline);
    const duringP50 = p50(during);
    const boundMs = 3 * baselineP50 + 20;
    assert.ok(
      duringP50 <= boundMs,
      `route B p50 ${duringP50.toFixed(1)} ms during the flood, ${baselineP50.toFixed(1)} ms before (bound ${boundMs.toFixed(1)} ms)`,
    );

    const served = floodAnswers.filter((a) => a.status === 200);
    const shed = floodAnswers.filter((a) => a.status !== 200);
    assert.ok(served.length > 0, 'route A still served up to its cap');
    assert.ok(shed.length > 0, 'route A shed its excess');
    for (const a of shed) {
      assert.ok(a.status === 429 || a.status === 503, `shed with ${a.status}`);
      assert.ok(a.retryAfter !== null && Number(a.retryAfter) >= 1, `shed without retry-after (${a.status})`);
      // Refused at the bulkhead, not after waiting on the slow provider.
      assert.ok(a.elapsedMs < SLOW_LATENCY_MS / 2, `a shed request took ${a.elapsedMs.toFixed(1)} ms`);
    }
    // Only the cap's worth of requests was ever at route A's provider at once.
    assert.ok(slow.stats().requests <= 1 + served.length);
  });
});
