import assert from 'node:assert/strict';
import { FakeClock } from '@keymesh/clock';
import { MemoryLimiterStore } from '../store/memory';
import { InvalidPoolSpecError, UnknownKeyError, UnknownPoolError } from './errors';
import { DEFAULT_COOLING_MS, KeyPoolLimiter } from './key-pool-limiter';
import type { AcquireResult, LeaseGrant, LeaseResult, PoolSpec } from './types';

const T0 = 1_700_000_000_000;

/** Lease ids are the store's to choose; tests that compare grants leave them out. */
function withoutLeaseIds(result: LeaseResult): LeaseResult {
  return { ...result, grants: result.grants.map(({ leaseId: _leaseId, ...grant }) => grant as LeaseGrant) };
}
const perMinute = (requests: number) => [{ requests, perMs: 60_000 }];

describe('KeyPoolLimiter', () => {
  let clock: FakeClock;
  let limiter: KeyPoolLimiter;
  const pools = (): PoolSpec[] => [
    {
      poolId: 'openai',
      keys: [
        { keyId: 'k1', limits: perMinute(2) },
        { keyId: 'k2', limits: perMinute(2) },
      ],
    },
    { poolId: 'anthropic', keys: [{ keyId: 'k1', limits: perMinute(1) }] },
  ];

  beforeEach(async () => {
    clock = new FakeClock(T0);
    limiter = new KeyPoolLimiter(new MemoryLimiterStore());
    await limiter.applyPools(pools());
  });

  const acquire = (excludedKeyIds: string[] = [], poolId = 'openai'): Promise<AcquireResult> =>
    limiter.acquire({ poolId, excludedKeyIds }, clock.nowMs());
  const report = (keyId: string, httpStatus: number, retryAfterMs?: number) =>
    limiter.reportOutcome({ poolId: 'openai', keyId, httpStatus, retryAfterMs }, clock.nowMs());

  describe('acquire', () => {
    it('denies with KEY_POOL_EXHAUSTED and the exact retry-after when every key is full', async () => {
      assert.deepEqual(await acquire(), { granted: true, keyId: 'k1', admissionId: '' });
      clock.advance(10_000);
      assert.deepEqual(await acquire(), { granted: true, keyId: 'k2', admissionId: '' });
      assert.deepEqual(await acquire(), { granted: true, keyId: 'k1', admissionId: '' });
      assert.deepEqual(await acquire(), { granted: true, keyId: 'k2', admissionId: '' });
      assert.deepEqual(await acquire(), { granted: false, retryAfterMs: 50_000, reason: 'KEY_POOL_EXHAUSTED' });
    });

    it('never grants a request a key it excluded, even the one with the most headroom', async () => {
      await acquire(['k2']);
      // k2 now has more headroom, but this request already tried it.
      assert.deepEqual(await acquire(['k2']), { granted: true, keyId: 'k1', admissionId: '' });
      assert.deepEqual(await acquire(['k2']), { granted: false, retryAfterMs: 60_000, reason: 'KEY_POOL_EXHAUSTED' });
      assert.deepEqual(await acquire(), { granted: true, keyId: 'k2', admissionId: '' });
    });

    it('denies with KEY_POOL_UNAVAILABLE and no retry-after when every key is excluded', async () => {
      assert.deepEqual(await acquire(['k1', 'k2']), { granted: false, retryAfterMs: undefined, reason: 'KEY_POOL_UNAVAILABLE' });
    });

    it('denies with KEY_POOL_EXHAUSTED when every key is cooling, and KEY_POOL_UNAVAILABLE when every key is parked', async () => {
      await report('k1', 429, 4000);
      await report('k2', 429, 7000);
      assert.deepEqual(await acquire(), { granted: false, retryAfterMs: 4000, reason: 'KEY_POOL_EXHAUSTED' });
      await report('k1', 401);
      await report('k2', 403);
      assert.deepEqual(await acquire(), { granted: false, retryAfterMs: undefined, reason: 'KEY_POOL_UNAVAILABLE' });
    });

    it('treats a key with no limits as always admissible', async () => {
      await limiter.applyPools([{ poolId: 'free', keys: [{ keyId: 'x', limits: [] }] }]);
      for (let i = 0; i < 1000; i++) assert.deepEqual(await acquire([], 'free'), { granted: true, keyId: 'x', admissionId: '' });
    });

    it('decides a batch in order, each exactly as acquire would', async () => {
      const results = await limiter.acquireBatch(
        [
          { poolId: 'anthropic' },
          { poolId: 'openai', excludedKeyIds: ['k1'] },
          { poolId: 'anthropic' },
        ],
        clock.nowMs(),
      );
      assert.deepEqual(results, [
        { granted: true, keyId: 'k1', admissionId: '' },
        { granted: true, keyId: 'k2', admissionId: '' },
        { granted: false, retryAfterMs: 60_000, reason: 'KEY_POOL_EXHAUSTED' },
      ]);
    });

    it('rejects an unknown pool asked alone with UnknownPoolError, and in a batch denies it briefly while deciding the others', async () => {
      await assert.rejects(acquire([], 'nope'), (err: unknown) => err instanceof UnknownPoolError && err.poolId === 'nope');
      // A policy that adds a pool reaches the router and the limiter a moment apart.
      assert.deepEqual(await limiter.acquireBatch([{ poolId: 'anthropic' }, { poolId: 'nope' }], clock.nowMs()), [
        { granted: true, keyId: 'k1', admissionId: '' },
        { granted: false, retryAfterMs: 250, reason: 'KEY_POOL_EXHAUSTED' },
      ]);
    });
  });

  describe('token limits', () => {
    beforeEach(async () => {
      await limiter.applyPools([{ poolId: 'tokens', keys: [{ keyId: 't1', limits: [], tokenLimits: [{ tokens: 1000, perMs: 60_000 }] }] }]);
    });

    it('reserves the estimate and settles it down to the reported usage', async () => {
      const first = await limiter.acquire({ poolId: 'tokens', estimatedTokens: 900 }, clock.nowMs());
      assert.ok(first.granted && first.admissionId !== '');
      const denied = await limiter.acquire({ poolId: 'tokens', estimatedTokens: 200 }, clock.nowMs());
      assert.deepEqual(denied, { granted: false, retryAfterMs: 60_000, reason: 'KEY_POOL_EXHAUSTED' });
      await limiter.settle([{ poolId: 'tokens', keyId: 't1', admissionId: first.admissionId, reservedTokens: 900, usedTokens: 120 }], clock.nowMs());
      assert.ok((await limiter.acquire({ poolId: 'tokens', estimatedTokens: 880 }, clock.nowMs())).granted);
    });

    it('drops settles for keys it no longer has rather than failing the batch', async () => {
      await limiter.settle([{ poolId: 'gone', keyId: 't1', admissionId: '1', reservedTokens: 9, usedTokens: 1 }], clock.nowMs());
    });

    it('says no key is usable when the request needs more tokens than any key\'s limit', async () => {
      assert.deepEqual(await limiter.acquire({ poolId: 'tokens', estimatedTokens: 1001 }, clock.nowMs()), {
        granted: false,
        retryAfterMs: undefined,
        reason: 'KEY_POOL_UNAVAILABLE',
      });
    });

    it('rejects token limits that are not positive whole numbers', async () => {
      await assert.rejects(
        limiter.applyPools([{ poolId: 'tokens', keys: [{ keyId: 't1', limits: [], tokenLimits: [{ tokens: 0.5, perMs: 60_000 }] }] }]),
        (err: unknown) => err instanceof InvalidPoolSpecError && err.message.includes('tokenLimits[0].tokens'),
      );
    });
  });

  describe('reportOutcome', () => {
    it('cools a key until its retry-after after a 429', async () => {
      assert.deepEqual(await report('k1', 429, 2500), {
        condition: 'COOLING',
        conditionReason: 'provider answered 429',
        coolingUntilMs: T0 + 2500,
      });
      assert.deepEqual(await acquire(['k2']), { granted: false, retryAfterMs: 2500, reason: 'KEY_POOL_EXHAUSTED' });
      clock.advance(2500);
      assert.deepEqual(await acquire(['k2']), { granted: true, keyId: 'k1', admissionId: '' });
    });

    it('cools a key until its reset when a success says nothing is left, and ignores a plain success', async () => {
      assert.equal((await report('k1', 200)).condition, 'READY');
      assert.deepEqual(await report('k1', 200, 4000), {
        condition: 'COOLING',
        conditionReason: 'provider reported no capacity left',
        coolingUntilMs: T0 + 4000,
      });
      assert.deepEqual(await acquire(['k2']), { granted: false, retryAfterMs: 4000, reason: 'KEY_POOL_EXHAUSTED' });
    });

    it('rests a key whose quota is spent until its pool\'s next quota period (monthly UTC by default), whatever the retry-after', async () => {
      const state = await limiter.reportOutcome({ poolId: 'openai', keyId: 'k1', httpStatus: 429, retryAfterMs: 1000, quotaExhausted: true }, clock.nowMs());
      const now = new Date(T0);
      assert.deepEqual(state, {
        condition: 'COOLING',
        conditionReason: 'quota exhausted',
        coolingUntilMs: Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1),
      });
      clock.advance(60_000);
      assert.deepEqual(await acquire(['k2']), { granted: false, retryAfterMs: Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1) - clock.nowMs(), reason: 'KEY_POOL_EXHAUSTED' });
    });

    it('shows a quota-rested key as COOLING, with its reason and the period\'s end, in keyStates (GetKeyState, keymesh keys state), not PARKED', async () => {
      // A 429 insufficient_quota, then a success for a request already in flight: still a rest until the period ends.
      await limiter.reportOutcome({ poolId: 'openai', keyId: 'k1', httpStatus: 429, quotaExhausted: true }, clock.nowMs());
      await report('k1', 200);
      const now = new Date(T0);
      const [k1] = await limiter.keyStates({ poolId: 'openai' }, clock.nowMs());
      assert.equal(k1!.condition, 'COOLING');
      assert.equal(k1!.conditionReason, 'quota exhausted');
      assert.equal(k1!.coolingUntilMs, Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
    });

    it('follows a pool\'s daily quota period in its time zone', async () => {
      await limiter.applyPools([{ ...pools()[0]!, quotaResets: { period: 'daily', timeZone: 'Asia/Tokyo' } }]);
      clock.set(Date.UTC(2026, 10, 25, 16));
      const state = await limiter.reportOutcome({ poolId: 'openai', keyId: 'k1', httpStatus: 429, quotaExhausted: true }, clock.nowMs());
      assert.equal(state.coolingUntilMs, Date.UTC(2026, 10, 26, 15));
    });

    it('cools a key for 1 s after a 429 without a retry-after', async () => {
      assert.equal(DEFAULT_COOLING_MS, 1000);
      assert.equal((await report('k1', 429)).coolingUntilMs, T0 + 1000);
      assert.equal((await report('k2', 429, Number.NaN)).coolingUntilMs, T0 + 1000);
    });

    it('parks a key after a 401 or a 403 until an operator unparks it', async () => {
      assert.deepEqual(await report('k1', 401), {
        condition: 'PARKED',
        conditionReason: 'provider answered 401',
        coolingUntilMs: undefined,
      });
      assert.equal((await report('k2', 403)).conditionReason, 'provider answered 403');
      clock.advance(24 * 3_600_000);
      assert.equal((await acquire()).granted, false);
      assert.equal((await limiter.unparkKey('openai', 'k1', clock.nowMs())).condition, 'READY');
      assert.deepEqual(await acquire(), { granted: true, keyId: 'k1', admissionId: '' });
    });

    it('changes nothing on a 2xx or any other status', async () => {
      await report('k1', 429, 5000);
      assert.equal((await report('k1', 200)).condition, 'COOLING');
      assert.equal((await report('k2', 200)).condition, 'READY');
      assert.equal((await report('k2', 500)).condition, 'READY');
      assert.deepEqual(await acquire(), { granted: true, keyId: 'k2', admissionId: '' });
    });

    it('keeps pools apart: a key id in two pools has two states', async () => {
      await report('k1', 401);
      assert.deepEqual(await acquire([], 'anthropic'), { granted: true, keyId: 'k1', admissionId: '' });
    });

    it('rejects an unknown key with UnknownKeyError', async () => {
      await assert.rejects(report('k9', 429), (err: unknown) => err instanceof UnknownKeyError && err.keyId === 'k9');
      await assert.rejects(limiter.unparkKey('anthropic', 'k2', clock.nowMs()), UnknownKeyError);
      await assert.rejects(limiter.reportOutcome({ poolId: 'nope', keyId: 'k1', httpStatus: 429 }, clock.nowMs()), UnknownPoolError);
    });
  });

  describe('applyPools', () => {
    it('keeps the counters, cooling and parks of unchanged keys across a reload', async () => {
      await acquire();
      await acquire();
      await acquire([], 'anthropic');
      await report('k2', 401);
      await limiter.applyPools(pools());
      const states = await limiter.keyStates({}, clock.nowMs());
      assert.deepEqual(
        states.map((s) => [s.poolId, s.keyId, s.condition, s.windows[0]!.remaining]),
        [
          ['openai', 'k1', 'READY', 1],
          ['openai', 'k2', 'PARKED', 1],
          ['anthropic', 'k1', 'READY', 0],
        ],
      );
    });

    it('rejects an invalid config, naming every problem, and keeps the previous one', async () => {
      const bad = [
        { poolId: 'openai', keys: [{ keyId: 'k1', limits: [{ requests: 0, perMs: 1000 }] }, { keyId: 'k1', limits: [] }] },
        { poolId: 'openai', keys: [{ keyId: '', limits: [{ requests: 1.5, perMs: -1 }] }] },
      ];
      await assert.rejects(limiter.applyPools(bad), (err: unknown) => {
        assert.ok(err instanceof InvalidPoolSpecError);
        assert.deepEqual(err.problems, [
          'pools[0].keys[0].limits[0].requests: must be an integer from 1 to 1000000, got 0',
          'pools[0].keys[1].keyId: duplicate key "k1"',
          'pools[1].poolId: duplicate pool "openai"',
          'pools[1].keys[0].keyId: must be a non-empty string',
          'pools[1].keys[0].limits[0].requests: must be an integer from 1 to 1000000, got 1.5',
          'pools[1].keys[0].limits[0].perMs: must be a positive number of ms, got -1',
        ]);
        return true;
      });
      assert.deepEqual(await acquire([], 'anthropic'), { granted: true, keyId: 'k1', admissionId: '' });
    });

    it('rejects a calendar quota with an unknown time zone, period or unit, naming its path', async () => {
      const bad = [
        {
          poolId: 'openai',
          keys: [
            {
              keyId: 'k1',
              limits: [],
              quotas: [
                { unit: 'requests', limit: 10, period: 'day', timeZone: 'Mars/Olympus' },
                { unit: 'calls', limit: 0, period: 'week', timeZone: 'UTC' },
              ],
            },
          ],
        },
      ] as unknown as PoolSpec[];
      await assert.rejects(limiter.applyPools(bad), (err: unknown) => {
        assert.ok(err instanceof InvalidPoolSpecError);
        assert.deepEqual(err.problems, [
          'pools[0].keys[0].quotas[0].timeZone: must be an IANA time zone like "Europe/Berlin", got "Mars/Olympus"',
          'pools[0].keys[0].quotas[1].unit: must be "requests" or "tokens", got calls',
          'pools[0].keys[0].quotas[1].limit: must be a positive integer, got 0',
          'pools[0].keys[0].quotas[1].period: must be "day" or "month", got week',
        ]);
        return true;
      });
    });

    it('forgets removed pools and keys', async () => {
      await limiter.applyPools([{ poolId: 'openai', keys: [{ keyId: 'k2', limits: perMinute(2) }] }]);
      await assert.rejects(acquire([], 'anthropic'), UnknownPoolError);
      await assert.rejects(report('k1', 429), UnknownKeyError);
      assert.deepEqual(await acquire(), { granted: true, keyId: 'k2', admissionId: '' });
    });
  });

  describe('grantLeases', () => {
    const HOLD_MS = 1000;
    const lease = (wantedSlots: number, excludedKeyIds: string[] = [], poolId = 'openai') =>
      limiter.grantLeases([{ poolId, wantedSlots, excludedKeyIds }], clock.nowMs(), HOLD_MS).then(([result]) => withoutLeaseIds(result!));

    beforeEach(async () => {
      await limiter.applyPools([
        ...pools(),
        {
          poolId: 'wide',
          keys: [
            { keyId: 'w1', limits: perMinute(40) },
            { keyId: 'w2', limits: perMinute(40) },
            { keyId: 'w3', limits: perMinute(40) },
          ],
        },
      ]);
    });

    it('leases slices of every key the request did not exclude', async () => {
      assert.deepEqual(await lease(9, [], 'wide'), {
        grants: [
          { keyId: 'w1', slots: 3 },
          { keyId: 'w2', slots: 3 },
          { keyId: 'w3', slots: 3 },
        ],
        retryAfterMs: undefined,
        reason: undefined,
      });
      assert.deepEqual((await lease(9, ['w2'], 'wide')).grants, [
        { keyId: 'w1', slots: 5 },
        { keyId: 'w3', slots: 4 },
      ]);
      assert.deepEqual((await lease(4, ['k1'])).grants, [{ keyId: 'k2', slots: 1 }]);
    });

    it('leases nothing with KEY_POOL_UNAVAILABLE and no retry-after when every key is excluded or parked', async () => {
      assert.deepEqual(await lease(4, ['k1', 'k2']), { grants: [], retryAfterMs: undefined, reason: 'KEY_POOL_UNAVAILABLE' });
      await report('k1', 401);
      await report('k2', 403);
      assert.deepEqual(await lease(4), { grants: [], retryAfterMs: undefined, reason: 'KEY_POOL_UNAVAILABLE' });
    });

    it('leases nothing with KEY_POOL_EXHAUSTED and the earliest wait when every key is cooling or full', async () => {
      await report('k1', 429, 4000);
      await report('k2', 429, 7000);
      assert.deepEqual(await lease(4), { grants: [], retryAfterMs: 4000, reason: 'KEY_POOL_EXHAUSTED' });
      clock.advance(4000);
      assert.deepEqual((await lease(4)).grants, [{ keyId: 'k1', slots: 1 }]);
      assert.deepEqual((await lease(4)).grants, [{ keyId: 'k1', slots: 1 }]);
      // k1 is full until its first slot's hold has ended and a minute has passed.
      assert.deepEqual(await lease(4), { grants: [], retryAfterMs: 3000, reason: 'KEY_POOL_EXHAUSTED' });
      assert.deepEqual(await lease(4, ['k2']), { grants: [], retryAfterMs: 60_000 + HOLD_MS, reason: 'KEY_POOL_EXHAUSTED' });
    });

    it('decides a batch in order, and denies a pool it does not know yet briefly without failing the others', async () => {
      const [granted, unknown] = await limiter.grantLeases([{ poolId: 'anthropic', wantedSlots: 1 }, { poolId: 'nope', wantedSlots: 1 }], clock.nowMs(), HOLD_MS);
      assert.equal(granted!.grants.length, 1);
      assert.deepEqual(unknown, { grants: [], retryAfterMs: 250, reason: 'KEY_POOL_EXHAUSTED' });
      clock.advance(60_000 + HOLD_MS);
      const results = await limiter.grantLeases(
        [
          { poolId: 'anthropic', wantedSlots: 1 },
          { poolId: 'anthropic', wantedSlots: 1 },
        ],
        clock.nowMs(),
        HOLD_MS,
      );
      assert.deepEqual(results.map(withoutLeaseIds), [
        { grants: [{ keyId: 'k1', slots: 1 }], retryAfterMs: undefined, reason: undefined },
        { grants: [], retryAfterMs: 60_000 + HOLD_MS, reason: 'KEY_POOL_EXHAUSTED' },
      ]);
    });
  });

  describe('keyStates', () => {
    it('shows each key\'s condition, reason, cooling end and windows', async () => {
      await acquire();
      await report('k2', 429, 3000);
      clock.advance(1000);
      assert.deepEqual(await limiter.keyStates({ poolId: 'openai' }, clock.nowMs()), [
        {
          poolId: 'openai',
          keyId: 'k1',
          condition: 'READY',
          conditionReason: '',
          coolingUntilMs: undefined,
          windows: [{ requests: 2, perMs: 60_000, remaining: 1, resetInMs: 59_000 }],
          tokenWindows: [],
          quotas: [],
        },
        {
          poolId: 'openai',
          keyId: 'k2',
          condition: 'COOLING',
          conditionReason: 'provider answered 429',
          coolingUntilMs: T0 + 3000,
          windows: [{ requests: 2, perMs: 60_000, remaining: 2, resetInMs: 0 }],
          tokenWindows: [],
          quotas: [],
        },
      ]);
    });

    it('rejects an unknown pool with UnknownPoolError', async () => {
      await assert.rejects(limiter.keyStates({ poolId: 'nope' }, clock.nowMs()), UnknownPoolError);
    });
  });
});
