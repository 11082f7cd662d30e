import assert from 'node:assert/strict';
import { secretOf, startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

function ask(t: TestMesh, content: string, priority: 'normal' | 'high'): Promise<Response> {
  return fetch(`${t.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json', 'x-keymesh-priority': priority },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] }),
  });
}

describe('capacity reserved for high priority', function () {
  let t: TestMesh | undefined;

  afterEach(async function () {
    await t?.stop();
    t = undefined;
  });

  it('serves high-priority requests under a flood of normal ones at the pool\'s limit, without an upstream 429', async function () {
    // One key, 10 per second; 3 of them only for high priority.
    t = await startTestMesh({
      mockKeys: [{ limits: [{ requests: 10, perMs: 1_000 }] }],
      declaredLimits: ['{ requests: 10, per: 1s }'],
      mainPoolSettings: ['reserve_for_high: 0.3'],
    });
    const mesh = t;
    const floodUntil = Date.now() + 2_600;
    const normal = { served: 0, refused: 0, other: 0 };
    const flood = async (worker: number): Promise<void> => {
      for (let i = 0; Date.now() < floodUntil; i++) {
        const response = await ask(mesh, `normal ${worker}.${i}`, 'normal');
        await response.arrayBuffer();
        if (response.status === 200) normal.served++;
        else if (response.status === 429) {
          normal.refused++;
          // The route may not wait: keymesh answers at once, so pace the retry a little.
          await new Promise((resolve) => setTimeout(resolve, 20));
        } else normal.other++;
      }
    };
    const floods = Array.from({ length: 8 }, (_, w) => flood(w));
    // Let the flood fill the unreserved part first.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const highStatuses: number[] = [];
    // Two per second at most: well inside the 3 reserved, so the reserve alone explains every success.
    for (let i = 0; i < 4; i++) {
      const response = await ask(mesh, `high ${i}`, 'high');
      highStatuses.push(response.status);
      await response.arrayBuffer();
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    await Promise.all(floods);
    const stats = JSON.stringify({ normal, highStatuses });
    assert.deepEqual(highStatuses, [200, 200, 200, 200], stats);
    assert.ok(normal.refused > 0 && normal.served > 0, `the flood must have hit the limit: ${stats}`);
    assert.equal(normal.other, 0, stats);
    assert.equal(mesh.mock.stats(secretOf(0)).rateLimited, 0, stats);
  });
});
