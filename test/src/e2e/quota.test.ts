import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { KeyCondition } from '@keymesh/proto/limiter/v1/limiter';
import { closeRpcClient } from '@keymesh/rpc';
import { limiterClient, secretOf, startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

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

    // Rested until the pool's quota period ends (monthly, UTC by default), not for a retry-after's seconds.
    const limiter = limiterClient(t);
    try {
      const { keys } = await limiter.getKeyState({ poolId: 'main' });
      const spent = keys.find((k) => k.keyId === 'k1')!;
      const now = new Date();
      assert.equal(spent.condition, KeyCondition.COOLING);
      assert.equal(timestampMs(spent.coolingUntil!), Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
    } finally {
      closeRpcClient(limiter);
    }
  });
});
