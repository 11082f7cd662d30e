import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { secretOf, startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

describe('a key whose quota is spent', function () {
  let t: TestMesh | undefined;

  afterEach(async function () {
    await t?.stop();
    t = undefined;
  });

  it('rests until its quota period ends after insufficient_quota, and requests move to the other keys', async function () {
    t = await startTestMesh({ mockKeys: [{ quotaRequests: 1 }, {}] });
    const client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    for (let i = 0; i < 8; i++) await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `q ${i}` }] });
    assert.equal(t.mock.stats(secretOf(0)).quotaExceeded, 1, 'one insufficient_quota, then the key is left alone');
  });
});
