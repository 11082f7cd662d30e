import assert from 'node:assert/strict';
import { LimiterService, QuotaPeriod, QuotaUnit } from '@keymesh/proto/limiter/v1/limiter';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { closeRpcClient, createRpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

const DAY_MS = 86_400_000;
/** Tokyo keeps UTC+9 all year, so its next midnight needs no time zone library to check. */
const TOKYO_OFFSET_MS = 9 * 3_600_000;

describe('calendar quotas', function () {
  let t: TestMesh | undefined;
  let limiter: ReturnType<typeof createRpcClient<typeof LimiterService>> | undefined;

  beforeEach(async function () {
    t = await startTestMesh({ mockKeys: [{}], declaredLimits: ['{ rpd: 3, time_zone: Asia/Tokyo }'] });
    const address = t.mesh.parts.find((p) => p.name === 'limiter')!.where;
    limiter = createRpcClient(LimiterService, address, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 5_000 });
  });

  afterEach(async function () {
    if (limiter) closeRpcClient(limiter);
    await t?.stop();
  });

  async function ask(content: string): Promise<{ status: number; retryAfterS: number }> {
    const response = await fetch(`${t!.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] }),
    });
    await response.text();
    return { status: response.status, retryAfterS: Number(response.headers.get('retry-after')) };
  }

  it('serves a key\'s daily quota, then answers 429 until the midnight of the quota\'s zone, and shows the quota in GetKeyState', async () => {
    const nextTokyoMidnightMs = Math.ceil((Date.now() + TOKYO_OFFSET_MS + 1) / DAY_MS) * DAY_MS - TOKYO_OFFSET_MS;
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await ask(`request ${i}`));
    assert.deepEqual(answers.map((a) => a.status), [200, 200, 200, 429, 429]);
    const expectedS = Math.ceil((nextTokyoMidnightMs - Date.now()) / 1000);
    assert.ok(Math.abs(answers[4]!.retryAfterS - expectedS) <= 2, `retry-after ${answers[4]!.retryAfterS} s, expected about ${expectedS} s`);
    assert.equal(t!.mock.stats().rateLimited, 0, 'the provider never had to refuse');

    const { keys } = await limiter!.getKeyState({ poolId: 'main' });
    const quota = keys[0]!.calendarQuotas[0]!;
    assert.deepEqual(
      { unit: quota.unit, limit: quota.limit, period: quota.period, timeZone: quota.timeZone, used: quota.used },
      { unit: QuotaUnit.REQUESTS, limit: 3n, period: QuotaPeriod.DAY, timeZone: 'Asia/Tokyo', used: 3n },
    );
    assert.equal(timestampMs(quota.resetsAt!), nextTokyoMidnightMs);
  });
});
