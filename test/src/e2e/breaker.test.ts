import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { BreakerScope, BreakerState, RouterService } from '@keymesh/proto/router/v1/router';
import { closeRpcClient, createRpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { cliJson, startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

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

  it('shows an open breaker over gRPC and on /metrics, and nothing secret in either', async function () {
    t = await startTestMesh({ mockKeys: [{}, {}] });
    const metricsUrl = t.baseUrl.replace(/\/v1$/, '/metrics');
    assert.equal((await ask(t, 'healthy')).status, 200);
    const healthy = await (await fetch(metricsUrl)).text();
    assert.match(healthy, /^keymesh_breaker_state\{scope="provider",provider="mock",pool="",key_id=""\} 0$/m);
    assert.match(healthy, /^keymesh_http_requests_total\{route="gpt-4o-mini",status="200"\} 1$/m);

    t.mock.setFailures({ errorRate: 1 });
    assert.equal((await ask(t, 'anyone there?')).status, 503);
    const metrics = await fetch(metricsUrl);
    assert.equal(metrics.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    const text = await metrics.text();
    assert.match(text, /^# TYPE keymesh_breaker_state gauge$/m);
    assert.match(text, /^keymesh_breaker_state\{scope="provider",provider="mock",pool="",key_id=""\} 2$/m);
    assert.match(text, /^keymesh_breaker_state\{scope="key",provider="mock",pool="main",key_id="k[12]"\} [02]$/m);
    assert.match(text, /^keymesh_http_requests_total\{route="gpt-4o-mini",status="503"\} 1$/m);
    assert.ok(!text.includes('mock-secret') && !text.includes(VIRTUAL_KEY), 'no secret or virtual key in a label');

    const router = createRpcClient(RouterService, t.grpcAddress, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 5_000 });
    try {
      const { breakers } = await router.getBreakerState({});
      const provider = breakers.find((b) => b.scope === BreakerScope.PROVIDER);
      assert.equal(provider?.providerId, 'mock');
      assert.equal(provider?.state, BreakerState.OPEN);
      assert.equal(provider?.reason, 'consecutive_failures');
      const openForMs = Number(provider?.openUntil?.seconds) * 1000 - Number(provider?.since?.seconds) * 1000;
      assert.ok(openForMs >= 4_000 && openForMs <= 6_000, `open for ${openForMs} ms`);
      assert.ok(breakers.every((b) => b.state !== BreakerState.CLOSED), 'closed breakers are not listed');
    } finally {
      closeRpcClient(router);
    }

    // `keymesh breakers` prints the same answer.
    const cli = await cliJson<{ breakers: { scope: string; providerId: string; state: string }[] }>(t, 'breakers');
    const printedProvider = cli.breakers.find((b) => b.scope === 'BREAKER_SCOPE_PROVIDER');
    assert.equal(printedProvider?.providerId, 'mock');
    assert.equal(printedProvider?.state, 'BREAKER_STATE_OPEN');
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
