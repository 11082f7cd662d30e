import assert from 'node:assert/strict';
import { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { closeRpcClient, createRpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { waitFor } from '@keymesh/testing';
import { startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

const TOKENS_PER_MINUTE = 1_000;

describe('token limits', function () {
  let t: TestMesh | undefined;
  let limiter: ReturnType<typeof createRpcClient<typeof LimiterService>> | undefined;

  beforeEach(async function () {
    // The provider enforces the same tokens per minute that keymesh is told about.
    t = await startTestMesh({
      mockKeys: [{ limits: [{ tokens: TOKENS_PER_MINUTE, perMs: 60_000 }] }],
      declaredLimits: [`{ tpm: ${TOKENS_PER_MINUTE} }`],
      extraRoutes: '  gpt-tight: { targets: [ { pool: main, model: gpt-4o-mini } ], default_max_tokens: 150 }',
    });
    const address = t.mesh.parts.find((p) => p.name === 'limiter')!.where;
    limiter = createRpcClient(LimiterService, address, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 5_000 });
  });

  afterEach(async function () {
    if (limiter) closeRpcClient(limiter);
    await t?.stop();
  });

  const ask = async (content: string, maxTokens?: number): Promise<number> => {
    const response = await fetch(`${t!.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-tight', messages: [{ role: 'user', content }], ...(maxTokens === undefined ? {} : { max_tokens: maxTokens }) }),
    });
    await response.text();
    return response.status;
  };

  const remainingTokens = async (): Promise<number> => {
    const { keys } = await limiter!.getKeyState({ poolId: 'main' });
    return Number(keys[0]!.tokenWindows[0]!.remainingTokens);
  };

  it('admits a burst only as far as the key\'s tokens per minute, so the provider never answers 429', async function () {
    // Each request may use its prompt (about 10 tokens) plus max_tokens 150, and the provider counts
    // all of it: at most six fit in 1000 (fewer while a lease's unspent budget is still counted),
    // and keymesh refuses the rest without an upstream call.
    const statuses = await Promise.all(Array.from({ length: 16 }, (_, i) => ask(`burst ${i}`, 150)));
    const served = statuses.filter((s) => s === 200).length;
    assert.ok(served >= 4 && served <= 6, `statuses: ${statuses.join(' ')}`);
    assert.equal(statuses.filter((s) => s === 429).length, 16 - served, `statuses: ${statuses.join(' ')}`);
    assert.equal(t!.mock.stats().rateLimited, 0, 'the provider never had to refuse');
    assert.equal(t!.mock.stats().requests, served);
  });

  it('gives back by settle what a reply did not use, so later requests are admitted', async function () {
    // Without max_tokens each request reserves about 160 (the route's default 150 plus its prompt)
    // but the reply uses about 20: without settles the seventh would find the window full.
    for (let i = 0; i < 12; i++) {
      await waitFor(async () => (await remainingTokens()) >= 170, { timeoutMs: 5_000, what: `room for request ${i} (settles giving unused tokens back)` });
      assert.equal(await ask(`request ${i}`), 200);
    }
    assert.equal(t!.mock.stats().rateLimited, 0);
    // Once the last lease's unspent budget is back, the window holds what the replies used, not what they reserved.
    await waitFor(async () => (await remainingTokens()) > TOKENS_PER_MINUTE - 12 * 40, { timeoutMs: 5_000, what: 'the window to hold only what was used' });
  });
});
