import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

interface Answer {
  status: number;
  retryAfterS: number;
  elapsedMs: number;
}

async function ask(t: TestMesh, content: string): Promise<Answer> {
  const started = Date.now();
  const response = await fetch(`${t.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] }),
  });
  await response.text();
  return { status: response.status, retryAfterS: Number(response.headers.get('retry-after')), elapsedMs: Date.now() - started };
}

/**
 * The breaker's open period is real time inside the mesh (5 s, then doubled), so
 * these tests wait out the retry-after the mesh announced, plus a little for the
 * time between the breaker opening and the answer.
 */
const waitOut = (retryAfterS: number) => delay(retryAfterS * 1000 + 100);

describe('circuit breakers in front of a failing provider', function () {
  this.timeout(60_000);
  let t: TestMesh;

  afterEach(async function () {
    await t?.stop();
  });

  it('stops calling a provider that keeps failing, and answers 503 at once with when to retry', async function () {
    t = await startTestMesh({ mockKeys: [{}, {}] });
    t.mock.setFailures({ errorRate: 1 });
    // Two keys for three rounds would be six calls; the provider's breaker opens after the fifth failure in a row.
    const first = await ask(t, 'anyone there?');
    assert.equal(first.status, 503);
    assert.equal(t.mock.stats().requests, 5);

    for (let i = 0; i < 5; i++) {
      const later = await ask(t, `still there? ${i}`);
      assert.equal(later.status, 503);
      assert.ok(later.retryAfterS >= 1 && later.retryAfterS <= 5, `retry-after ${later.retryAfterS}`);
      // Refused before any provider call, and without waiting out the route's retry rounds.
      assert.ok(later.elapsedMs < 500, `took ${later.elapsedMs} ms`);
    }
    assert.equal(t.mock.stats().requests, 5, 'no request reached the provider while its breaker was open');
  });

  it('sends one probe after the open period, opens again for twice as long while the provider fails, and closes once it recovers', async function () {
    t = await startTestMesh({ mockKeys: [{}, {}] });
    t.mock.setFailures({ errorRate: 1 });
    const first = await ask(t, 'anyone there?');
    assert.equal(first.status, 503);
    const opened = t.mock.stats().requests;
    const refused = await ask(t, 'down?');
    assert.equal(refused.status, 503);
    assert.equal(t.mock.stats().requests, opened);

    await waitOut(refused.retryAfterS);
    const probe = await ask(t, 'probe while still down');
    assert.equal(probe.status, 503);
    assert.equal(t.mock.stats().requests, opened + 1, 'exactly one probe reached the provider');
    assert.equal(probe.retryAfterS, 10, 'the failed probe doubled the open period');

    t.mock.setFailures({});
    assert.equal((await ask(t, 'too early')).status, 503);
    assert.equal(t.mock.stats().requests, opened + 1);

    await waitOut(probe.retryAfterS);
    const recovered = await ask(t, 'back?');
    assert.equal(recovered.status, 200);
    // Closed: every request goes through again, not just one probe at a time.
    const burst = await Promise.all([1, 2, 3, 4].map((i) => ask(t, `burst ${i}`)));
    assert.deepEqual(burst.map((a) => a.status), [200, 200, 200, 200]);
    assert.equal(t.mock.stats().ok, 5);
  });
});
