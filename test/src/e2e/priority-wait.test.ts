import assert from 'node:assert/strict';
import { secretOf, startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

// One key, 1 request per 600 ms, declared; a route that may wait up to 5 s, with a single retry round
// so that only the waiting line (not retry rounds) can explain a request served after a denial.
const WAITING_ROUTE = '  waiting: { targets: [ { pool: main, model: gpt-4o-mini } ], max_wait: 5s, retry: { attempts: 1 } }';

function ask(t: TestMesh, content: string, priority: string | undefined, model = 'waiting'): Promise<Response> {
  return fetch(`${t.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${VIRTUAL_KEY}`,
      'content-type': 'application/json',
      ...(priority === undefined ? {} : { 'x-keymesh-priority': priority }),
    },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
  });
}

describe('priorities and waiting for capacity', function () {
  let t: TestMesh | undefined;

  afterEach(async function () {
    await t?.stop();
    t = undefined;
  });

  it('lets requests wait in line for a full key within max_wait, whatever their priority, without an upstream 429', async function () {
    t = await startTestMesh({
      mockKeys: [{ limits: [{ requests: 1, perMs: 600 }] }],
      declaredLimits: ['{ requests: 1, per: 600ms }'],
      extraRoutes: WAITING_ROUTE,
    });
    const mesh = t;
    assert.equal((await ask(mesh, 'fills the window', undefined)).status, 200);
    const started = Date.now();
    // Three more for a key that takes one per 600 ms: with one retry round and no line, two would fail.
    const responses = await Promise.all([ask(mesh, 'low', 'low'), ask(mesh, 'normal', 'normal'), ask(mesh, 'high', 'HIGH')]);
    for (const response of responses) assert.equal(response.status, 200, await response.text());
    assert.ok(Date.now() - started >= 1_000, 'the last waited for a second window');
    assert.equal(mesh.mock.stats(secretOf(0)).rateLimited, 0);
  });

  it('answers 429 with retry-after at once on a route that may not wait', async function () {
    t = await startTestMesh({ mockKeys: [{ limits: [{ requests: 1, perMs: 60_000 }] }], declaredLimits: ['{ requests: 1, per: 60s }'] });
    assert.equal((await ask(t, 'one', 'high', 'gpt-4o-mini')).status, 200);
    const started = Date.now();
    const refused = await ask(t, 'two', 'high', 'gpt-4o-mini');
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers.get('retry-after')) > 0);
    assert.ok(Date.now() - started < 2_000);
  });

  it('rejects an x-keymesh-priority it does not know with 400', async function () {
    t = await startTestMesh({ mockKeys: [{}] });
    const response = await ask(t, 'typo', 'urgent', 'gpt-4o-mini');
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { message: string } };
    assert.match(body.error.message, /x-keymesh-priority/);
  });
});
