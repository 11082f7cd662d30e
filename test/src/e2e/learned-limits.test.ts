import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { secretOf, startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

const ask = (client: OpenAI, content: string) =>
  client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] });

/** Sends `count` requests at once; how many were served and how many keymesh refused with 429. */
async function burst(client: OpenAI, count: number, label: string): Promise<{ served: number; refused: number }> {
  const results = await Promise.allSettled(Array.from({ length: count }, (_, i) => ask(client, `${label} ${i}`)));
  let served = 0;
  let refused = 0;
  for (const result of results) {
    if (result.status === 'fulfilled') served++;
    else if (result.reason instanceof OpenAI.RateLimitError) refused++;
    else throw result.reason;
  }
  return { served, refused };
}

describe('limits learned from the provider\'s headers', function () {
  let t: TestMesh | undefined;

  afterEach(async function () {
    await t?.stop();
    t = undefined;
  });

  it('a burst larger than an undeclared key\'s limit earns at most one 429 per key, and none once the headers are followed', async function () {
    // Nothing declared: only the mock's x-ratelimit-* headers say 4 per 600 ms per key.
    const limits = [{ requests: 4, perMs: 600 }];
    t = await startTestMesh({ mockKeys: [{ limits }, { limits }] });
    const client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    const rateLimited = (mesh: TestMesh): number[] => [mesh.mock.stats(secretOf(0)).rateLimited, mesh.mock.stats(secretOf(1)).rateLimited];

    // 20 at once against 8 per window: keymesh spreads them over the windows (retry rounds honour the learned resets).
    const first = await burst(client, 20, 'first burst');
    const afterFirst = rateLimited(t);
    assert.ok(afterFirst.every((n) => n <= 1), `upstream 429s per key: ${afterFirst.join(', ')}`);
    assert.ok(first.served >= 8, `served ${first.served}`);

    const second = await burst(client, 20, 'second burst');
    assert.deepEqual(rateLimited(t), afterFirst, 'no upstream 429 once the limit is learned');
    assert.ok(second.served >= 4, `served ${second.served}`);
  });

  it('sends no more than the provider says remains when others spent part of a key', async function () {
    const limits = [{ requests: 10, perMs: 60_000 }];
    t = await startTestMesh({ mockKeys: [{ limits }] });
    // Someone else spends 7 of the key's 10 straight at the provider.
    for (let i = 0; i < 7; i++) {
      const response = await fetch(`${t.mock.url}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${secretOf(0)}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'elsewhere' }] }),
      });
      assert.equal(response.status, 200);
    }
    const client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    const { served } = await burst(client, 10, 'burst');
    assert.equal(served, 3);
    assert.equal(t.mock.stats(secretOf(0)).rateLimited, 0);
  });
});
