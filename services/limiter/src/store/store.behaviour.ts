import assert from 'node:assert/strict';
import type { CalendarQuota, LeaseGrant, PoolSpec, QuotaState, WindowLimit } from '../domain/types';
import type { FakeClock } from '@keymesh/clock';
import { countInWindow, maxInAnyInterval, seededRandom } from './interval-check';
import type { AcquireDecision, LeaseDecision, LimiterStore } from './store';

const T0 = 1_700_000_000_000;

/**
 * Within 50 ms: a store may read time itself (Redis TIME) a moment after the
 * test's clock, so waits measured across that gap may differ by a few ms.
 */
function assertClose(actualMs: number | undefined, expectedMs: number): void {
  assert.ok(actualMs !== undefined && Math.abs(actualMs - expectedMs) <= 50, `expected ${expectedMs} ms (±50), got ${String(actualMs)}`);
}

function pool(poolId: string, keys: Record<string, WindowLimit[]>): PoolSpec {
  return { poolId, keys: Object.entries(keys).map(([keyId, limits]) => ({ keyId, limits })) };
}

/** Slots leased at grantMs, each of which may be spent at any real time in [grantMs, holdEndMs]. */
interface LeasedSlots {
  readonly grantMs: number;
  readonly holdEndMs: number;
  readonly slots: number;
}

/**
 * The most admissions an adversary can put into one half-open interval
 * [t, t + perMs): every ordinary admission inside it, plus every leased slot
 * whose hold interval touches it (the router may spend the slot anywhere in its
 * hold). Deliberately naive. Only starts at an ordinary admission or at a hold's
 * end need checking: sliding t right gains members until one leaves, and a
 * member leaves only just after t passes its admission or its hold's end.
 */
function worstCaseInAnyInterval(admittedMs: readonly number[], leases: readonly LeasedSlots[], perMs: number): number {
  const startsMs = [...admittedMs, ...leases.map((l) => l.holdEndMs)];
  let max = 0;
  for (const startMs of startsMs) {
    const endMs = startMs + perMs;
    let count = 0;
    for (const t of admittedMs) if (t >= startMs && t < endMs) count++;
    for (const l of leases) if (l.grantMs < endMs && l.holdEndMs >= startMs) count += l.slots;
    if (count > max) max = count;
  }
  return max;
}

/** Lease ids are the store's to choose; tests that compare grants leave them out. */
function withoutLeaseIds(decision: LeaseDecision): LeaseDecision {
  return { ...decision, grants: decision.grants.map(({ leaseId: _leaseId, ...grant }) => grant as LeaseGrant) };
}

/** The most tokens any half-open interval [t, t + perMs) holds; deliberately naive. */
function maxTokensInAnyInterval(admitted: readonly { atMs: number; tokens: number }[], perMs: number): number {
  let max = 0;
  for (const start of admitted) {
    let sum = 0;
    for (const a of admitted) if (a.atMs >= start.atMs && a.atMs < start.atMs + perMs) sum += a.tokens;
    if (sum > max) max = sum;
  }
  return max;
}

/**
 * The behaviour every LimiterStore must show, run by memory.test.ts and
 * redis.test.ts alike. Time moves only through `clock`.
 */
export function describeLimiterStore(
  name: string,
  makeStore: () => Promise<LimiterStore>,
  clock: FakeClock,
): void {
  describe(`LimiterStore: ${name}`, () => {
    let store: LimiterStore;

    beforeEach(async () => {
      clock.set(T0);
      store = await makeStore();
    });

    afterEach(async () => {
      await store.close();
    });

    async function acquire(poolId: string, keyIds: readonly string[]): Promise<AcquireDecision> {
      const [decision] = await store.acquire([{ poolId, keyIds }], clock.nowMs());
      return decision!;
    }

    async function grantedKey(poolId: string, keyIds: readonly string[]): Promise<string> {
      const decision = await acquire(poolId, keyIds);
      assert.ok(decision.granted, `expected a grant at +${clock.nowMs() - T0} ms, got ${JSON.stringify(decision)}`);
      return decision.keyId;
    }

    async function retryAfterMs(poolId: string, keyIds: readonly string[]): Promise<number | undefined> {
      const decision = await acquire(poolId, keyIds);
      assert.equal(decision.granted, false, `expected a denial at +${clock.nowMs() - T0} ms`);
      return decision.granted ? -1 : decision.retryAfterMs;
    }

    describe('one window', () => {
      beforeEach(async () => {
        await store.configure([pool('p', { a: [{ requests: 5, perMs: 1000 }] })]);
      });

      it('admits exactly N in an interval of the limit\'s length and denies the next with the exact wait', async () => {
        for (let i = 0; i < 5; i++) {
          await grantedKey('p', ['a']);
          clock.advance(100);
        }
        // Now at +500; the oldest admission (at +0) leaves the window at +1000.
        assert.equal(await retryAfterMs('p', ['a']), 500);
        clock.advance(123);
        assert.equal(await retryAfterMs('p', ['a']), 377);
      });

      it('admits again exactly when the oldest admission leaves the window', async () => {
        for (let i = 0; i < 5; i++) {
          await grantedKey('p', ['a']);
          clock.advance(100);
        }
        clock.set(T0 + 999);
        assert.equal(await retryAfterMs('p', ['a']), 1);
        clock.set(T0 + 1000);
        await grantedKey('p', ['a']);
        // The next to leave is the one admitted at +100.
        assert.equal(await retryAfterMs('p', ['a']), 100);
        clock.set(T0 + 1100);
        await grantedKey('p', ['a']);
      });

      it('never exceeds N in any interval when a burst straddles a window boundary', async () => {
        const grantsMs: number[] = [];
        // A burst just before a minute-style boundary and one just after: fixed
        // windows would admit both (2N in 2 ms).
        for (const atMs of [T0 + 999, T0 + 1000, T0 + 1001, T0 + 1999, T0 + 2000, T0 + 2001]) {
          clock.set(atMs);
          for (let i = 0; i < 5; i++) {
            const decision = await acquire('p', ['a']);
            if (decision.granted) grantsMs.push(atMs);
          }
        }
        assert.equal(maxInAnyInterval(grantsMs, 1000), 5);
        assert.deepEqual(grantsMs, [T0 + 999, T0 + 999, T0 + 999, T0 + 999, T0 + 999, T0 + 1999, T0 + 1999, T0 + 1999, T0 + 1999, T0 + 1999]);
      });

      it('reports remaining and reset per window', async () => {
        await grantedKey('p', ['a']);
        clock.advance(200);
        await grantedKey('p', ['a']);
        clock.advance(300);
        const [state] = await store.snapshot('p', clock.nowMs());
        assert.deepEqual(state, {
          poolId: 'p',
          keyId: 'a',
          condition: 'READY',
          conditionReason: '',
          coolingUntilMs: undefined,
          windows: [{ requests: 5, perMs: 1000, remaining: 3, resetInMs: 700 }],
          tokenWindows: [],
          quotas: [],
        });
        clock.advance(500);
        const [later] = await store.snapshot('p', clock.nowMs());
        assert.deepEqual(later!.windows, [{ requests: 5, perMs: 1000, remaining: 4, resetInMs: 200 }]);
      });

      it('keeps counting correctly when the clock steps back', async () => {
        clock.set(T0 + 1000);
        await grantedKey('p', ['a']);
        clock.set(T0);
        for (let i = 0; i < 4; i++) await grantedKey('p', ['a']);
        // The four came after the one at +1000, whatever the clock said: all five
        // stay in the window until +2000.
        clock.set(T0 + 1500);
        const [state] = await store.snapshot('p', clock.nowMs());
        assert.equal(state!.windows[0]!.remaining, 0);
        assert.equal(await retryAfterMs('p', ['a']), 500);
        clock.set(T0 + 1999);
        assert.equal(await retryAfterMs('p', ['a']), 1);
        clock.set(T0 + 2000);
        await grantedKey('p', ['a']);
      });
    });

    it('enforces every window of a key (5 per second and 60 per minute)', async () => {
      await store.configure([
        pool('p', { a: [{ requests: 5, perMs: 1000 }, { requests: 60, perMs: 60_000 }] }),
      ]);
      const grantsMs: number[] = [];
      for (let atMs = T0; atMs < T0 + 130_000; atMs += 50) {
        clock.set(atMs);
        const decision = await acquire('p', ['a']);
        if (decision.granted) grantsMs.push(atMs);
        else if (atMs === T0 + 20_000) {
          // The minute window is full by now: the wait is until the first admission leaves it.
          assert.equal(decision.retryAfterMs, 40_000);
        }
      }
      assert.equal(maxInAnyInterval(grantsMs, 1000), 5);
      assert.equal(maxInAnyInterval(grantsMs, 60_000), 60);
      // 5 per second fills the minute in 12 s, then nothing until the first minute has passed.
      assert.equal(grantsMs.filter((t) => t < T0 + 1000).length, 5);
      assert.equal(grantsMs.filter((t) => t < T0 + 60_000).length, 60);
      assert.equal(grantsMs[60], T0 + 60_000);
    });

    describe('choosing a key', () => {
      it('grants the key with the most headroom as a share of its limit', async () => {
        await store.configure([
          pool('p', { big: [{ requests: 100, perMs: 60_000 }], small: [{ requests: 10, perMs: 60_000 }] }),
        ]);
        for (let i = 0; i < 50; i++) await grantedKey('p', ['big']);
        for (let i = 0; i < 2; i++) await grantedKey('p', ['small']);
        // big has 50 left (50%), small 8 (80%).
        assert.equal(await grantedKey('p', ['big', 'small']), 'small');
        for (let i = 0; i < 3; i++) await grantedKey('p', ['small']);
        // small now has 4 left (40%).
        assert.equal(await grantedKey('p', ['big', 'small']), 'big');
      });

      it('rates a key by its tightest window', async () => {
        await store.configure([
          pool('p', {
            a: [{ requests: 100, perMs: 1000 }, { requests: 100, perMs: 60_000 }],
            b: [{ requests: 10, perMs: 1000 }],
          }),
        ]);
        for (let i = 0; i < 95; i++) {
          clock.advance(200);
          await grantedKey('p', ['a']);
        }
        for (let i = 0; i < 5; i++) await grantedKey('p', ['b']);
        // a: 95% left in its second, 5% in its minute; b: 50% down to 10%.
        for (let i = 0; i < 4; i++) assert.equal(await grantedKey('p', ['a', 'b']), 'b');
      });

      it('breaks headroom ties in favour of the least recently granted key', async () => {
        const limits = [{ requests: 100, perMs: 60_000 }];
        await store.configure([pool('p', { a: limits, b: limits, c: limits })]);
        for (const keyId of ['c', 'a', 'b']) await grantedKey('p', [keyId]);
        const order: string[] = [];
        for (let i = 0; i < 6; i++) order.push(await grantedKey('p', ['a', 'b', 'c']));
        assert.deepEqual(order, ['c', 'a', 'b', 'c', 'a', 'b']);
      });

      it('spreads grants round-robin across equal keys', async () => {
        const limits = [{ requests: 100, perMs: 60_000 }];
        await store.configure([pool('p', { a: limits, b: limits, c: limits })]);
        const order: string[] = [];
        for (let i = 0; i < 9; i++) order.push(await grantedKey('p', ['a', 'b', 'c']));
        assert.deepEqual(order, ['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c']);
      });

      it('spreads grants round-robin across keys with no limits', async () => {
        await store.configure([pool('p', { a: [], b: [] })]);
        const order: string[] = [];
        for (let i = 0; i < 4; i++) order.push(await grantedKey('p', ['a', 'b']));
        assert.deepEqual(order, ['a', 'b', 'a', 'b']);
      });

      it('grants only among the candidates it is given', async () => {
        await store.configure([pool('p', { a: [], b: [{ requests: 1, perMs: 1000 }] })]);
        assert.equal(await grantedKey('p', ['b']), 'b');
        assert.equal(await retryAfterMs('p', ['b']), 1000);
      });

      it('decides a batch in order, each as a single acquire would', async () => {
        await store.configure([pool('p', { a: [{ requests: 2, perMs: 1000 }], b: [{ requests: 1, perMs: 1000 }] })]);
        const decisions = await store.acquire(
          [
            { poolId: 'p', keyIds: ['a', 'b'] },
            { poolId: 'p', keyIds: ['a', 'b'] },
            { poolId: 'p', keyIds: ['a', 'b'] },
            { poolId: 'p', keyIds: ['a', 'b'] },
          ],
          clock.nowMs(),
        );
        assert.deepEqual(decisions, [
          { granted: true, keyId: 'a', admissionId: '' },
          { granted: true, keyId: 'b', admissionId: '' },
          { granted: true, keyId: 'a', admissionId: '' },
          { granted: false, retryAfterMs: 1000 },
        ]);
      });
    });

    describe('key selection, the high-priority reserve and burst windows', () => {
      const roomy = [{ requests: 1000, perMs: 60_000 }];

      async function acquireAs(keyIds: readonly string[], high: boolean): Promise<AcquireDecision> {
        const [decision] = await store.acquire([{ poolId: 'p', keyIds, high }], clock.nowMs());
        return decision!;
      }

      async function leaseAs(keyIds: readonly string[], wantedSlots: number, high: boolean, holdMs = 0): Promise<LeaseDecision> {
        const [decision] = await store.lease([{ poolId: 'p', keyIds, wantedSlots, high }], clock.nowMs(), holdMs);
        return withoutLeaseIds(decision!);
      }

      it('spreads a weighted pool\'s grants exactly by weight (3:1 over 40 acquires), each run of four a, a, b, a', async () => {
        await store.configure([{ poolId: 'p', keySelection: 'weighted', keys: [{ keyId: 'a', limits: roomy, weight: 3 }, { keyId: 'b', limits: roomy, weight: 1 }] }]);
        const order: string[] = [];
        for (let i = 0; i < 40; i++) order.push(await grantedKey('p', ['a', 'b']));
        assert.equal(order.filter((k) => k === 'a').length, 30);
        assert.equal(order.filter((k) => k === 'b').length, 10);
        assert.deepEqual(order.slice(0, 8), ['a', 'a', 'b', 'a', 'a', 'a', 'b', 'a']);
      });

      it('weighs only the keys with room, so a full key\'s share goes to the others and none idles', async () => {
        await store.configure([
          {
            poolId: 'p',
            keySelection: 'weighted',
            keys: [
              { keyId: 'a', limits: [{ requests: 2, perMs: 1000 }], weight: 3 },
              { keyId: 'b', limits: roomy, weight: 1 },
            ],
          },
        ]);
        const order: string[] = [];
        for (let i = 0; i < 6; i++) order.push(await grantedKey('p', ['a', 'b']));
        assert.deepEqual(order, ['a', 'a', 'b', 'b', 'b', 'b']);
      });

      it('grants a cheapest pool\'s cheapest key until it is full, then the next cheapest, ties by headroom', async () => {
        const five = [{ requests: 5, perMs: 1000 }];
        await store.configure([
          {
            poolId: 'p',
            keySelection: 'cheapest',
            keys: [
              { keyId: 'dear', limits: five, cost: 10 },
              { keyId: 'cheap', limits: five, cost: 1 },
              { keyId: 'cheap-too', limits: [{ requests: 50, perMs: 1000 }], cost: 1 },
            ],
          },
        ]);
        await grantedKey('p', ['cheap-too']);
        // cheap (100% left) beats cheap-too (98%) on headroom; dear waits until both are full.
        const order: string[] = [];
        for (let i = 0; i < 54; i++) order.push(await grantedKey('p', ['dear', 'cheap', 'cheap-too']));
        assert.equal(order[0], 'cheap');
        assert.equal(order.filter((k) => k === 'cheap').length, 5);
        assert.equal(order.filter((k) => k === 'cheap-too').length, 49);
        assert.equal(await grantedKey('p', ['dear', 'cheap', 'cheap-too']), 'dear');
      });

      it('denies a normal request at exactly the reserve boundary with the wait until it clears, and admits high ones into the reserve', async () => {
        await store.configure([{ poolId: 'p', reserveForHigh: 0.2, keys: [{ keyId: 'a', limits: [{ requests: 10, perMs: 1000 }] }] }]);
        for (let i = 0; i < 8; i++) {
          const decision = await acquireAs(['a'], false);
          assert.ok(decision.granted, `normal ${i + 1} of 8`);
          clock.advance(100);
        }
        // At +800, 8 of 10 are used: 2 (20%) must stay free for high priority. The first admission leaves at +1000.
        const denied = await acquireAs(['a'], false);
        assert.equal(denied.granted, false);
        assertClose(denied.granted ? undefined : denied.retryAfterMs, 200);
        assert.ok((await acquireAs(['a'], true)).granted);
        assert.ok((await acquireAs(['a'], true)).granted);
        const full = await acquireAs(['a'], true);
        assertClose(full.granted ? undefined : full.retryAfterMs, 200);
        clock.set(T0 + 1000);
        // The first admission left; 9 are in the window, so a normal request still waits (until +1100), a high one fits.
        assert.equal((await acquireAs(['a'], false)).granted, false);
        assert.ok((await acquireAs(['a'], true)).granted);
      });

      it('keeps a burst window of a fraction of a millisecond exactly (3 of 7 per second: 3 in any 3000/7 ms)', async () => {
        const burstPerMs = (1000 * 3) / 7;
        await store.configure([pool('p', { a: [{ requests: 7, perMs: 1000 }, { requests: 3, perMs: burstPerMs, burst: true }] })]);
        for (let i = 0; i < 3; i++) await grantedKey('p', ['a']);
        assertClose(await retryAfterMs('p', ['a']), burstPerMs);
        clock.set(T0 + 428);
        await retryAfterMs('p', ['a']);
        clock.set(T0 + 429);
        await grantedKey('p', ['a']);
        const [state] = await store.snapshot('p', clock.nowMs());
        assert.deepEqual(state!.windows.map((w) => [w.requests, w.perMs, w.remaining]), [[7, 1000, 3], [3, burstPerMs, 2]]);
      });

      it('reserves ceil(share × limit) of token windows too, so a normal request never eats into them', async () => {
        await store.configure([{ poolId: 'p', reserveForHigh: 0.25, keys: [{ keyId: 'a', limits: [], tokenLimits: [{ tokens: 1000, perMs: 1000 }] }] }]);
        const [big] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens: 751 }], clock.nowMs());
        assert.deepEqual(big, { granted: false, retryAfterMs: undefined });
        const [fits] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens: 750 }], clock.nowMs());
        assert.ok(fits!.granted);
        const [more] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens: 1 }], clock.nowMs());
        assertClose(more!.granted ? undefined : more!.retryAfterMs, 1000);
        const [high] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens: 250, high: true }], clock.nowMs());
        assert.ok(high!.granted);
      });

      it('carves normal leases from the unreserved part only, and high leases from the reserve too', async () => {
        await store.configure([{ poolId: 'p', reserveForHigh: 0.5, keys: [{ keyId: 'a', limits: [{ requests: 40, perMs: 1000 }] }] }]);
        let normalSlots = 0;
        for (let i = 0; i < 40; i++) {
          const decision = await leaseAs(['a'], 100, false);
          if (decision.grants.length === 0) {
            assertClose(decision.retryAfterMs, 1000);
            break;
          }
          normalSlots += decision.grants[0]!.slots;
        }
        assert.equal(normalSlots, 20);
        // 20 left for high priority: a quarter of them per grant.
        assert.deepEqual((await leaseAs(['a'], 100, true)).grants, [{ keyId: 'a', slots: 5 }]);
      });

      it('splits a weighted pool\'s lease by weight and a cheapest pool\'s cheapest first, each key at most a quarter of its headroom', async () => {
        await store.configure([
          { poolId: 'p', keySelection: 'weighted', keys: [{ keyId: 'a', limits: roomy, weight: 3 }, { keyId: 'b', limits: roomy, weight: 1 }] },
          {
            poolId: 'q',
            keySelection: 'cheapest',
            keys: [
              { keyId: 'dear', limits: [{ requests: 40, perMs: 1000 }], cost: 2 },
              { keyId: 'cheap', limits: [{ requests: 40, perMs: 1000 }], cost: 1 },
            ],
          },
        ]);
        assert.deepEqual((await leaseAs(['a', 'b'], 8, false)).grants, [
          { keyId: 'a', slots: 6 },
          { keyId: 'b', slots: 2 },
        ]);
        const [cheapest] = await store.lease([{ poolId: 'q', keyIds: ['dear', 'cheap'], wantedSlots: 5 }], clock.nowMs(), 0);
        assert.deepEqual(withoutLeaseIds(cheapest!).grants, [{ keyId: 'cheap', slots: 5 }]);
        const [spill] = await store.lease([{ poolId: 'q', keyIds: ['dear', 'cheap'], wantedSlots: 100 }], clock.nowMs(), 0);
        // cheap has 35 left: 8 (a quarter); dear gets the next 10 (a quarter of 40).
        assert.deepEqual(withoutLeaseIds(spill!).grants, [
          { keyId: 'cheap', slots: 8 },
          { keyId: 'dear', slots: 10 },
        ]);
      });

      it('keeps a weighted pool exactly to its weights when acquires and leases mix', async () => {
        await store.configure([{ poolId: 'p', keySelection: 'weighted', keys: [{ keyId: 'a', limits: roomy, weight: 1 }, { keyId: 'b', limits: roomy, weight: 1 }] }]);
        assert.equal(await grantedKey('p', ['a', 'b']), 'a');
        assert.deepEqual((await leaseAs(['a', 'b'], 3, false)).grants, [
          { keyId: 'a', slots: 1 },
          { keyId: 'b', slots: 2 },
        ]);
        assert.equal(await grantedKey('p', ['a', 'b']), 'a');
      });
    });

    describe('conditions', () => {
      beforeEach(async () => {
        const limits = [{ requests: 2, perMs: 10_000 }];
        await store.configure([pool('p', { a: limits, b: limits })]);
      });

      it('never grants a cooling key before its cooling ends', async () => {
        const state = await store.cool({ poolId: 'p', keyId: 'a' }, T0 + 5000, 'provider answered 429', clock.nowMs());
        assert.deepEqual(state, { condition: 'COOLING', conditionReason: 'provider answered 429', coolingUntilMs: T0 + 5000 });
        assert.equal(await grantedKey('p', ['a', 'b']), 'b');
        assert.equal(await retryAfterMs('p', ['a']), 5000);
        clock.set(T0 + 4999);
        assert.equal(await retryAfterMs('p', ['a']), 1);
        clock.set(T0 + 5000);
        assert.equal(await grantedKey('p', ['a']), 'a');
        assert.equal((await store.condition({ poolId: 'p', keyId: 'a' }, clock.nowMs()))!.condition, 'READY');
      });

      it('waits for both the cooling and the windows of a cooling key', async () => {
        await grantedKey('p', ['a']);
        await grantedKey('p', ['a']);
        await store.cool({ poolId: 'p', keyId: 'a' }, T0 + 3000, 'provider answered 429', clock.nowMs());
        assert.equal(await retryAfterMs('p', ['a']), 10_000);
      });

      it('keeps the longer cooling when a later 429 asks for less', async () => {
        await store.cool({ poolId: 'p', keyId: 'a' }, T0 + 5000, 'provider answered 429', clock.nowMs());
        const state = await store.cool({ poolId: 'p', keyId: 'a' }, T0 + 1000, 'provider answered 429', clock.nowMs());
        assert.equal(state!.coolingUntilMs, T0 + 5000);
        assert.equal(await retryAfterMs('p', ['a']), 5000);
      });

      it('retries after the earliest cooling end when every key is cooling', async () => {
        await store.cool({ poolId: 'p', keyId: 'a' }, T0 + 3000, 'provider answered 429', clock.nowMs());
        await store.cool({ poolId: 'p', keyId: 'b' }, T0 + 1200, 'provider answered 429', clock.nowMs());
        assert.equal(await retryAfterMs('p', ['a', 'b']), 1200);
      });

      it('never grants a parked key, and gives no retry-after when every key is parked', async () => {
        const state = await store.park({ poolId: 'p', keyId: 'a' }, 'provider answered 401', clock.nowMs());
        assert.deepEqual(state, { condition: 'PARKED', conditionReason: 'provider answered 401', coolingUntilMs: undefined });
        assert.equal(await grantedKey('p', ['a', 'b']), 'b');
        await store.park({ poolId: 'p', keyId: 'b' }, 'provider answered 403', clock.nowMs());
        assert.equal(await retryAfterMs('p', ['a', 'b']), undefined);
        clock.advance(3_600_000);
        assert.equal(await retryAfterMs('p', ['a', 'b']), undefined);
      });

      it('leaves parked keys out of the retry-after', async () => {
        await store.park({ poolId: 'p', keyId: 'a' }, 'provider answered 401', clock.nowMs());
        await store.cool({ poolId: 'p', keyId: 'b' }, T0 + 2000, 'provider answered 429', clock.nowMs());
        assert.equal(await retryAfterMs('p', ['a', 'b']), 2000);
      });

      it('grants a key again once it is unparked', async () => {
        await store.park({ poolId: 'p', keyId: 'a' }, 'provider answered 401', clock.nowMs());
        const state = await store.unpark({ poolId: 'p', keyId: 'a' }, clock.nowMs());
        assert.equal(state!.condition, 'READY');
        assert.equal(await grantedKey('p', ['a']), 'a');
      });

      it('answers undefined for a key it does not have', async () => {
        assert.equal(await store.cool({ poolId: 'p', keyId: 'zz' }, T0 + 1, 'x', clock.nowMs()), undefined);
        assert.equal(await store.park({ poolId: 'q', keyId: 'a' }, 'x', clock.nowMs()), undefined);
        assert.equal(await store.condition({ poolId: 'p', keyId: 'zz' }, clock.nowMs()), undefined);
      });
    });

    describe('configure', () => {
      const specs = (): PoolSpec[] => [
        pool('p', {
          full: [{ requests: 2, perMs: 10_000 }],
          cooling: [{ requests: 2, perMs: 10_000 }],
          parked: [{ requests: 2, perMs: 10_000 }],
        }),
      ];

      it('keeps the windows and conditions of keys whose limits are unchanged', async () => {
        await store.configure(specs());
        await grantedKey('p', ['full']);
        clock.advance(1000);
        await grantedKey('p', ['full']);
        await store.cool({ poolId: 'p', keyId: 'cooling' }, T0 + 60_000, 'provider answered 429', clock.nowMs());
        await store.park({ poolId: 'p', keyId: 'parked' }, 'provider answered 401', clock.nowMs());

        await store.configure(specs());

        assert.equal(await retryAfterMs('p', ['full']), 9000);
        const states = await store.snapshot('p', clock.nowMs());
        assert.deepEqual(
          states.map((s) => [s.keyId, s.condition, s.conditionReason]),
          [
            ['full', 'READY', ''],
            ['cooling', 'COOLING', 'provider answered 429'],
            ['parked', 'PARKED', 'provider answered 401'],
          ],
        );
      });

      it('carries recent admissions and the condition into changed limits', async () => {
        await store.configure([pool('p', { a: [{ requests: 2, perMs: 1000 }, { requests: 10, perMs: 60_000 }] })]);
        for (let i = 0; i < 3; i++) {
          await grantedKey('p', ['a']);
          await grantedKey('p', ['a']);
          clock.advance(1000);
        }
        clock.advance(-1000);
        await store.park({ poolId: 'p', keyId: 'a' }, 'provider answered 403', clock.nowMs());
        await store.configure([pool('p', { a: [{ requests: 20, perMs: 60_000 }, { requests: 3, perMs: 1000 }] })]);
        const [state] = await store.snapshot('p', clock.nowMs());
        assert.equal(state!.condition, 'PARKED');
        assert.equal(state!.conditionReason, 'provider answered 403');
        // All 6 admissions of the last minute, 2 of them in the last second.
        assert.deepEqual(
          state!.windows.map((w) => w.remaining),
          [14, 1],
        );
      });

      it('drops removed keys and pools, and a key added back starts afresh', async () => {
        await store.configure([...specs(), pool('q', { x: [] })]);
        await store.park({ poolId: 'p', keyId: 'parked' }, 'provider answered 401', clock.nowMs());
        await store.configure([pool('p', { full: [{ requests: 2, perMs: 10_000 }] })]);
        assert.deepEqual(
          (await store.snapshot(undefined, clock.nowMs())).map((s) => `${s.poolId}/${s.keyId}`),
          ['p/full'],
        );
        assert.equal(await retryAfterMs('p', ['parked', 'cooling']), undefined);
        assert.equal(await retryAfterMs('q', ['x']), undefined);
        await store.configure(specs());
        assert.equal(await grantedKey('p', ['parked']), 'parked');
      });
    });

    describe('token windows', () => {
      const tokenKey = (tokens: number, perMs: number, limits: WindowLimit[] = []) => ({ keyId: 'a', limits, tokenLimits: [{ tokens, perMs }] });

      async function reserve(tokens: number, keyIds: readonly string[] = ['a']): Promise<AcquireDecision> {
        const [decision] = await store.acquire([{ poolId: 'p', keyIds, tokens }], clock.nowMs());
        return decision!;
      }

      async function reserved(tokens: number, keyIds: readonly string[] = ['a']): Promise<{ keyId: string; admissionId: string }> {
        const decision = await reserve(tokens, keyIds);
        assert.ok(decision.granted, `expected ${tokens} tokens granted at +${clock.nowMs() - T0} ms, got ${JSON.stringify(decision)}`);
        assert.notEqual(decision.admissionId, '');
        return decision;
      }

      async function tokenRetryAfterMs(tokens: number): Promise<number | undefined> {
        const decision = await reserve(tokens);
        assert.equal(decision.granted, false, `expected ${tokens} tokens denied at +${clock.nowMs() - T0} ms`);
        return decision.granted ? -1 : decision.retryAfterMs;
      }

      it('admits exactly N tokens in an interval of the limit\'s length and denies the next with the exact wait', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000)] }]);
        for (let i = 0; i < 3; i++) {
          await reserved(300);
          clock.advance(10_000);
        }
        // At +30 s, 900 are in the window: 200 more would make 1100; the 300 from +0 leave at +60 s.
        assert.equal(await tokenRetryAfterMs(200), 30_000);
        await reserved(100);
        assert.equal(await tokenRetryAfterMs(1), 30_000);
        clock.set(T0 + 59_999);
        assert.equal(await tokenRetryAfterMs(300), 1);
        clock.set(T0 + 60_000);
        await reserved(300);
        // Full again: the next to leave is the 300 from +10 s.
        assert.equal(await tokenRetryAfterMs(300), 10_000);
      });

      it('never lets the tokens of any interval exceed the limit, with request windows too, under random arrivals', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(5_000, 10_000, [{ requests: 8, perMs: 1_000 }])] }]);
        const random = seededRandom(7);
        const admitted: { atMs: number; tokens: number }[] = [];
        let denied = 0;
        for (let atMs = T0; atMs < T0 + 60_000; atMs += Math.floor(random() * 120)) {
          clock.set(atMs);
          const tokens = 1 + Math.floor(random() * 900);
          const decision = await reserve(tokens);
          if (decision.granted) admitted.push({ atMs, tokens });
          else {
            denied++;
            // The wait is exact: a millisecond earlier is still too soon, at the wait it fits.
            assert.ok(decision.retryAfterMs !== undefined && decision.retryAfterMs > 0);
          }
        }
        assert.ok(denied > 0, 'the arrivals should have hit the limit');
        assert.ok(maxTokensInAnyInterval(admitted, 10_000) <= 5_000, `${maxTokensInAnyInterval(admitted, 10_000)} tokens in one window`);
        assert.ok(maxTokensInAnyInterval(admitted, 10_000) > 4_000, 'the limit should have been nearly used');
        assert.ok(maxInAnyInterval(admitted.map((a) => a.atMs), 1_000) <= 8);
      });

      it('admits a denied request exactly at its retry-after', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 1000)] }]);
        await reserved(700);
        clock.advance(300);
        await reserved(200);
        clock.advance(17);
        const waitMs = await tokenRetryAfterMs(400);
        assert.equal(waitMs, 683);
        clock.advance(waitMs! - 1);
        await tokenRetryAfterMs(400);
        clock.advance(1);
        await reserved(400);
      });

      it('never admits a request with more tokens than a key\'s limit, and names no retry-after', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000)] }]);
        assert.equal(await tokenRetryAfterMs(1001), undefined);
        await reserved(1000);
      });

      it('gives the request to the key with the most token headroom', async () => {
        await store.configure([
          { poolId: 'p', keys: [{ keyId: 'a', limits: [], tokenLimits: [{ tokens: 1000, perMs: 60_000 }] }, { keyId: 'b', limits: [], tokenLimits: [{ tokens: 1000, perMs: 60_000 }] }] },
        ]);
        await reserved(600, ['a']);
        assert.equal((await reserved(100, ['a', 'b'])).keyId, 'b');
        await reserved(500, ['b']);
        // 40% left on each: the tie goes to the least recently granted.
        assert.equal((await reserved(1, ['a', 'b'])).keyId, 'a');
        assert.equal((await reserved(1, ['a', 'b'])).keyId, 'b');
      });

      it('refunds unused tokens by settle, so the window admits them again', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000)] }]);
        const first = await reserved(800);
        clock.advance(5_000);
        assert.equal(await tokenRetryAfterMs(500), 55_000);
        await store.settle([{ poolId: 'p', keyId: 'a', admissionId: first.admissionId, reservedTokens: 800, usedTokens: 150 }], clock.nowMs());
        const [state] = await store.snapshot('p', clock.nowMs());
        assert.deepEqual(state!.tokenWindows, [{ tokens: 1000, perMs: 60_000, remaining: 850, resetInMs: 55_000 }]);
        await reserved(850);
        // The refunded admission still counts its 150 until it leaves at +60 s.
        assert.equal(await tokenRetryAfterMs(150), 55_000);
        assert.equal(await tokenRetryAfterMs(151), 60_000);
      });

      it('records an excess at settle time, counted until a window after the settle', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000)] }]);
        const first = await reserved(100);
        clock.set(T0 + 30_000);
        await store.settle([{ poolId: 'p', keyId: 'a', admissionId: first.admissionId, reservedTokens: 100, usedTokens: 700 }], clock.nowMs());
        assert.equal(await tokenRetryAfterMs(301), 30_000);
        clock.set(T0 + 60_000);
        // The reservation left; the 600 excess stays until +90 s.
        await reserved(400);
        assert.equal(await tokenRetryAfterMs(1), 30_000);
      });

      it('ignores settles for unknown keys and reservations that left every window', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 1_000)] }]);
        const first = await reserved(900);
        clock.advance(2_000);
        await reserved(900);
        await store.settle(
          [
            { poolId: 'p', keyId: 'a', admissionId: first.admissionId, reservedTokens: 900, usedTokens: 0 },
            { poolId: 'p', keyId: 'gone', admissionId: '1', reservedTokens: 900, usedTokens: 0 },
            { poolId: 'nope', keyId: 'a', admissionId: '1', reservedTokens: 900, usedTokens: 0 },
          ],
          clock.nowMs(),
        );
        assert.equal(await tokenRetryAfterMs(101), 1_000);
      });

      it('leases no slots of a key with token windows to a caller that wants no token budget', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000, [{ requests: 10, perMs: 1000 }])] }]);
        const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 4 }], clock.nowMs(), 1000);
        assert.deepEqual(decision!.grants, []);
      });

      it('carves a token budget with the slots, at most a quarter of the token headroom, counted until the hold ends', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000)] }]);
        const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 4, wantedTokens: 400 }], clock.nowMs(), 1000);
        const [grant] = decision!.grants;
        assert.equal(grant!.slots, 4);
        assert.equal(grant!.tokens, 250);
        assert.ok(grant!.admissionId !== undefined && grant!.admissionId !== '');
        assert.equal(await tokenRetryAfterMs(751), 61_000);
        await reserved(750);
        // Near the limit a budget shrinks to one slot's average, if that fits.
        clock.set(T0 + 61_000);
        await reserved(900);
        const [small] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 4, wantedTokens: 200 }], clock.nowMs(), 1000);
        assert.equal(small!.grants[0]!.tokens, 50);
      });

      it('still counts tokens admitted before a lease whose hold ends past their window', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(100_000, 60_000)] }]);
        await reserved(60_000);
        // A lease near the window's end is recorded at its hold's end (T0 + 60 s): that must not
        // forget the 60,000 still inside the window now.
        clock.set(T0 + 59_000);
        const [lease] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 1, wantedTokens: 1_000 }], clock.nowMs(), 1_000);
        assert.equal(lease!.grants[0]!.tokens, 1_000);
        clock.set(T0 + 59_100);
        assert.equal((await reserve(39_001)).granted, false, 'only 39,000 of the 100,000 are left in [T0, T0 + 60 s)');
        await reserved(39_000);
      });

      it('shrinks a lease\'s budget by the settles of the requests spent from it', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000)] }]);
        const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 2, wantedTokens: 200 }], clock.nowMs(), 1000);
        const grant = decision!.grants[0]!;
        assert.equal(grant.tokens, 200);
        await store.settle([{ poolId: 'p', keyId: 'a', admissionId: grant.admissionId!, reservedTokens: 150, usedTokens: 30 }], clock.nowMs());
        await reserved(920);
        assert.equal(await tokenRetryAfterMs(1), 61_000);
      });

      it('never lets three leasing callers and direct reservations spend more than the limit in any interval', async function () {
        this.timeout(60_000);
        const limit = 3_000;
        const perMs = 5_000;
        await store.configure([{ poolId: 'p', keys: [tokenKey(limit, perMs, [{ requests: 50, perMs: 1_000 }])] }]);
        const random = seededRandom(11);
        const holdMs = 400;
        // What each caller may still spend: the budget of its current lease, until the hold ends.
        const callers = [0, 1, 2].map(() => ({ tokens: 0, slots: 0, admissionId: '', holdEndMs: 0 }));
        const spent: { atMs: number; tokens: number }[] = [];
        for (let atMs = T0; atMs < T0 + 30_000; atMs += 1 + Math.floor(random() * 40)) {
          clock.set(atMs);
          const caller = callers[Math.floor(random() * 4)];
          const estimate = 20 + Math.floor(random() * 200);
          const used = Math.floor(estimate * random());
          if (caller === undefined) {
            const decision = await reserve(estimate);
            if (!decision.granted) continue;
            spent.push({ atMs, tokens: used });
            await store.settle([{ poolId: 'p', keyId: 'a', admissionId: decision.admissionId, reservedTokens: estimate, usedTokens: used }], atMs);
            continue;
          }
          if (caller.holdEndMs <= atMs || caller.slots === 0 || caller.tokens < estimate) {
            const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 4, wantedTokens: 4 * estimate }], atMs, holdMs);
            const grant = decision!.grants[0];
            if (grant === undefined) continue;
            Object.assign(caller, { tokens: grant.tokens!, slots: grant.slots, admissionId: grant.admissionId!, holdEndMs: atMs + holdMs });
            if (caller.tokens < estimate) continue;
          }
          caller.tokens -= estimate;
          caller.slots--;
          spent.push({ atMs, tokens: used });
          await store.settle([{ poolId: 'p', keyId: 'a', admissionId: caller.admissionId, reservedTokens: estimate, usedTokens: used }], atMs);
        }
        const worst = maxTokensInAnyInterval(spent, perMs);
        assert.ok(worst <= limit, `${worst} tokens spent in one interval of ${perMs} ms`);
        assert.ok(worst > limit / 2, `only ${worst}: the callers should have pressed against the limit`);
      });

      it('gives back a lease\'s unspent token budget, at most what it was granted, once', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000)] }]);
        const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 2, wantedTokens: 200 }], clock.nowMs(), 1000);
        const grant = decision!.grants[0]!;
        assert.equal(grant.tokens, 200);
        const given = { poolId: 'p', keyId: 'a', leaseId: grant.leaseId, slots: 0, tokens: 150 };
        await store.lease([], clock.nowMs(), 1000, [given]);
        await store.lease([], clock.nowMs(), 1000, [given]);
        await reserved(950);
        assert.equal(await tokenRetryAfterMs(1), 61_000);
      });

      it('never gives back more of a lease\'s budget than it was granted', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000)] }]);
        const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 2, wantedTokens: 200 }], clock.nowMs(), 1000);
        await reserved(800);
        await store.lease([], clock.nowMs(), 1000, [{ poolId: 'p', keyId: 'a', leaseId: decision!.grants[0]!.leaseId, slots: 5, tokens: 900 }]);
        await reserved(200);
        // Reservations after the lease are recorded at its stamp (+1 s), so the log stays in time order.
        assert.equal(await tokenRetryAfterMs(1), 61_000);
      });

      it('keeps spent tokens when the token limit changes', async () => {
        await store.configure([{ poolId: 'p', keys: [tokenKey(1000, 60_000)] }]);
        await reserved(700);
        await store.configure([{ poolId: 'p', keys: [tokenKey(2000, 60_000)] }]);
        const [state] = await store.snapshot('p', clock.nowMs());
        assert.equal(state!.tokenWindows[0]!.remaining, 1300);
        assert.equal(await tokenRetryAfterMs(1301), 60_000);
      });
    });

    describe('calendar quotas', () => {
      const quotaKey = (...quotas: CalendarQuota[]) => ({ keyId: 'a', limits: [], quotas });
      const perDay = (limit: number, timeZone: string, unit: CalendarQuota['unit'] = 'requests'): CalendarQuota => ({ unit, limit, period: 'day', timeZone });

      async function deniedRetryAfterMs(tokens = 0): Promise<number | undefined> {
        const [decision] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens }], clock.nowMs());
        assert.equal(decision!.granted, false, `expected a denial at ${new Date(clock.nowMs()).toISOString()}`);
        return decision!.granted ? -1 : decision!.retryAfterMs;
      }

      async function quotaState(): Promise<QuotaState> {
        const [state] = await store.snapshot('p', clock.nowMs());
        return state!.quotas[0]!;
      }

      it('admits exactly N in a day and retries the next after the time to the zone\'s midnight, not UTC\'s', async () => {
        // 19:00 in Tokyo (UTC+9): its day ends at 15:00 UTC, nine hours before UTC's.
        clock.set(Date.parse('2026-03-10T10:00:00Z'));
        await store.configure([{ poolId: 'p', keys: [quotaKey(perDay(5, 'Asia/Tokyo'))] }]);
        for (let i = 0; i < 5; i++) await grantedKey('p', ['a']);
        assertClose(await deniedRetryAfterMs(), 5 * 3_600_000);
        clock.set(Date.parse('2026-03-10T14:59:59.999Z'));
        assertClose(await deniedRetryAfterMs(), 1);
        clock.set(Date.parse('2026-03-10T15:00:00Z'));
        for (let i = 0; i < 5; i++) await grantedKey('p', ['a']);
        // UTC's midnight resets nothing: the Tokyo day runs until 15:00 UTC tomorrow.
        clock.set(Date.parse('2026-03-11T00:00:00Z'));
        assertClose(await deniedRetryAfterMs(), 15 * 3_600_000);
      });

      it('shows the quota, what was used and when it resets', async () => {
        clock.set(Date.parse('2026-03-10T10:00:00Z'));
        await store.configure([{ poolId: 'p', keys: [quotaKey(perDay(5, 'America/New_York'))] }]);
        await grantedKey('p', ['a']);
        await grantedKey('p', ['a']);
        const state = await quotaState();
        assert.deepEqual({ ...state, resetAtMs: 0 }, { unit: 'requests', limit: 5, period: 'day', timeZone: 'America/New_York', used: 2, resetAtMs: 0 });
        assertClose(state.resetAtMs, Date.parse('2026-03-11T04:00:00Z'));
      });

      it('gives a day of a DST change its real length (23 h in spring, 25 h in autumn)', async () => {
        // New York springs forward on 2026-03-08: that day runs 05:00 UTC to 04:00 UTC.
        clock.set(Date.parse('2026-03-08T05:00:00Z'));
        await store.configure([{ poolId: 'p', keys: [quotaKey(perDay(1, 'America/New_York'))] }]);
        await grantedKey('p', ['a']);
        assertClose(await deniedRetryAfterMs(), 23 * 3_600_000);
        clock.set(Date.parse('2026-03-09T04:00:00Z'));
        await grantedKey('p', ['a']);
        // It falls back on 2026-11-01: 04:00 UTC to 05:00 UTC the next day.
        clock.set(Date.parse('2026-11-01T04:00:00Z'));
        await grantedKey('p', ['a']);
        assertClose(await deniedRetryAfterMs(), 25 * 3_600_000);
      });

      it('resets a monthly quota on the 1st at the zone\'s midnight', async () => {
        // Berlin is UTC+1 in February: March starts at 23:00 UTC on the 28th.
        clock.set(Date.parse('2026-02-15T12:00:00Z'));
        await store.configure([{ poolId: 'p', keys: [quotaKey({ unit: 'requests', limit: 3, period: 'month', timeZone: 'Europe/Berlin' })] }]);
        for (let i = 0; i < 3; i++) await grantedKey('p', ['a']);
        const endMs = Date.parse('2026-02-28T23:00:00Z');
        assertClose(await deniedRetryAfterMs(), endMs - clock.nowMs());
        clock.set(endMs - 1);
        assertClose(await deniedRetryAfterMs(), 1);
        clock.set(endMs);
        for (let i = 0; i < 3; i++) await grantedKey('p', ['a']);
        assertClose(await deniedRetryAfterMs(), Date.parse('2026-03-31T22:00:00Z') - endMs);
      });

      it('reserves estimated tokens in a token quota and follows settles', async () => {
        clock.set(Date.parse('2026-03-10T22:00:00Z'));
        await store.configure([{ poolId: 'p', keys: [quotaKey(perDay(1000, 'UTC', 'tokens'))] }]);
        const [first] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens: 600 }], clock.nowMs());
        assert.ok(first!.granted && first!.admissionId !== '');
        const [second] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens: 400 }], clock.nowMs());
        assert.ok(second!.granted);
        assertClose(await deniedRetryAfterMs(1), 2 * 3_600_000);
        // 600 reserved, 300 used: 300 come back. More than the quota can never fit.
        await store.settle([{ poolId: 'p', keyId: 'a', admissionId: first!.admissionId, reservedTokens: 600, usedTokens: 300 }], clock.nowMs());
        assert.equal((await quotaState()).used, 700);
        assert.equal(await deniedRetryAfterMs(1001), undefined);
        // 400 reserved, 450 used: the excess counts too.
        await store.settle([{ poolId: 'p', keyId: 'a', admissionId: second!.admissionId, reservedTokens: 400, usedTokens: 450 }], clock.nowMs());
        assert.equal((await quotaState()).used, 750);
        const [third] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens: 250 }], clock.nowMs());
        assert.ok(third!.granted);
        assertClose(await deniedRetryAfterMs(1), 2 * 3_600_000);
      });

      it('keeps what was spent this period when a quota\'s limit changes', async () => {
        clock.set(Date.parse('2026-03-10T10:00:00Z'));
        await store.configure([{ poolId: 'p', keys: [quotaKey(perDay(3, 'UTC'))] }]);
        for (let i = 0; i < 3; i++) await grantedKey('p', ['a']);
        await store.configure([{ poolId: 'p', keys: [quotaKey(perDay(4, 'UTC'))] }]);
        await grantedKey('p', ['a']);
        assertClose(await deniedRetryAfterMs(), 14 * 3_600_000);
        assert.equal((await quotaState()).used, 4);
      });

      it('never leases more slots or tokens than the quota has left, and counts a hold past midnight in the next day too', async () => {
        clock.set(Date.parse('2026-03-10T23:00:00Z'));
        const midnightMs = Date.parse('2026-03-11T00:00:00Z');
        await store.configure([
          { poolId: 'p', keys: [quotaKey(perDay(10, 'UTC'), perDay(5000, 'UTC', 'tokens')), { keyId: 'b', limits: [], quotas: [perDay(1000, 'UTC', 'tokens')] }] },
        ]);
        async function leaseAll(keyId: string, wantedTokens: number): Promise<{ slots: number; tokens: number }> {
          const total = { slots: 0, tokens: 0 };
          for (let i = 0; i < 20; i++) {
            const [decision] = await store.lease([{ poolId: 'p', keyIds: [keyId], wantedSlots: 100, wantedTokens }], clock.nowMs(), 1000);
            for (const grant of decision!.grants) {
              total.slots += grant.slots;
              total.tokens += grant.tokens ?? 0;
            }
            if (decision!.grants.length === 0) assertClose(decision!.retryAfterMs, midnightMs - clock.nowMs());
            clock.advance(1000);
          }
          return total;
        }
        const a = await leaseAll('a', 100);
        assert.equal(a.slots, 10);
        assert.ok(a.tokens <= 5000, `leased ${a.tokens} tokens of a 5000 quota`);
        assertClose(await deniedRetryAfterMs(), midnightMs - clock.nowMs());
        assert.equal((await leaseAll('b', 100_000)).tokens, 1000);
        // Half a second before midnight with a one-second hold: the slot may be spent tomorrow.
        clock.set(Date.parse('2026-03-11T23:59:59.500Z'));
        const [late] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 1, wantedTokens: 100 }], clock.nowMs(), 1000);
        assert.equal(late!.grants[0]!.slots, 1);
        clock.set(Date.parse('2026-03-12T00:00:00Z'));
        assert.equal((await quotaState()).used, 1);
      });

      it('takes a returned lease\'s unspent slots and budget back from every day it counted them in', async () => {
        clock.set(Date.parse('2026-03-10T23:59:59.500Z'));
        await store.configure([{ poolId: 'p', keys: [quotaKey(perDay(20, 'UTC'), perDay(1000, 'UTC', 'tokens'))] }]);
        const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 5, wantedTokens: 200 }], clock.nowMs(), 1000);
        const grant = decision!.grants[0]!;
        assert.deepEqual([grant.slots, grant.tokens], [5, 200]);
        // Two slots and 80 tokens were spent; the hold reached into the 11th, which counted the lease too.
        clock.set(Date.parse('2026-03-10T23:59:59.800Z'));
        const given = { poolId: 'p', keyId: 'a', leaseId: grant.leaseId, slots: 3, tokens: 120 };
        await store.lease([], clock.nowMs(), 1000, [given]);
        const [today] = await store.snapshot('p', clock.nowMs());
        assert.deepEqual(today!.quotas.map((q) => q.used), [2, 80]);
        clock.set(Date.parse('2026-03-11T00:00:00Z'));
        await store.lease([], clock.nowMs(), 1000, [given]);
        const [tomorrow] = await store.snapshot('p', clock.nowMs());
        assert.deepEqual(tomorrow!.quotas.map((q) => q.used), [2, 80]);
      });

      it('frees nothing of a quota for a lease given back long after its end', async () => {
        clock.set(Date.parse('2026-03-10T10:00:00Z'));
        await store.configure([{ poolId: 'p', keys: [quotaKey(perDay(20, 'UTC'))] }]);
        const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 5 }], clock.nowMs(), 1000);
        const grant = decision!.grants[0]!;
        clock.set(Date.parse('2026-03-10T10:10:01Z'));
        await store.lease([], clock.nowMs(), 1000, [{ poolId: 'p', keyId: 'a', leaseId: grant.leaseId, slots: grant.slots, tokens: 0 }]);
        assert.equal((await quotaState()).used, grant.slots);
      });
    });

    describe('leases', () => {
      async function lease(keyIds: readonly string[], wantedSlots: number, holdMs: number): Promise<LeaseDecision> {
        const [decision] = await store.lease([{ poolId: 'p', keyIds, wantedSlots }], clock.nowMs(), holdMs);
        return withoutLeaseIds(decision!);
      }

      async function remaining(keyId: string): Promise<number[]> {
        const states = await store.snapshot('p', clock.nowMs());
        return states.find((s) => s.keyId === keyId)!.windows.map((w) => w.remaining);
      }

      it('checks a lease against the windows at its grant and counts its slots until its hold ends', async () => {
        await store.configure([pool('p', { a: [{ requests: 8, perMs: 1000 }] })]);
        for (let i = 0; i < 4; i++) await grantedKey('p', ['a']);
        assert.deepEqual(await lease(['a'], 100, 500), { grants: [{ keyId: 'a', slots: 1 }], retryAfterMs: undefined });
        // The four acquires have left the window; the slot may still be spent up to +500.
        clock.set(T0 + 1000);
        assert.deepEqual(await remaining('a'), [7]);
        clock.set(T0 + 1499);
        assert.deepEqual(await remaining('a'), [7]);
        clock.set(T0 + 1500);
        assert.deepEqual(await remaining('a'), [8]);
      });

      it('sees a leased slot until holdMs + perMs after its grant, and not a millisecond longer', async () => {
        await store.configure([pool('p', { a: [{ requests: 1, perMs: 1000 }] })]);
        assert.deepEqual(await lease(['a'], 1, 700), { grants: [{ keyId: 'a', slots: 1 }], retryAfterMs: undefined });
        clock.set(T0 + 1699);
        assert.equal(await retryAfterMs('p', ['a']), 1);
        clock.set(T0 + 1700);
        await grantedKey('p', ['a']);
        // And the other way round: a lease waits for an ordinary admission to leave.
        clock.set(T0 + 2699);
        assert.deepEqual(await lease(['a'], 1, 0), { grants: [], retryAfterMs: 1 });
        clock.set(T0 + 2700);
        assert.deepEqual(await lease(['a'], 1, 0), { grants: [{ keyId: 'a', slots: 1 }], retryAfterMs: undefined });
        clock.set(T0 + 3699);
        assert.equal(await retryAfterMs('p', ['a']), 1);
        clock.set(T0 + 3700);
        await grantedKey('p', ['a']);
      });

      it('grants a lease right before the window slides, and counts it in every window it may be spent in', async () => {
        await store.configure([pool('p', { a: [{ requests: 4, perMs: 1000 }] })]);
        const admittedMs: number[] = [];
        for (let i = 0; i < 3; i++) {
          await grantedKey('p', ['a']);
          admittedMs.push(clock.nowMs());
        }
        clock.set(T0 + 999);
        assert.deepEqual(await lease(['a'], 4, 1000), { grants: [{ keyId: 'a', slots: 1 }], retryAfterMs: undefined });
        assert.deepEqual(await lease(['a'], 4, 1000), { grants: [], retryAfterMs: 1 });
        // The window slides past the three acquires, but the slot may be spent as late as +1999.
        clock.set(T0 + 1000);
        for (let i = 0; i < 3; i++) {
          await grantedKey('p', ['a']);
          admittedMs.push(clock.nowMs());
        }
        assert.equal((await acquire('p', ['a'])).granted, false);
        assert.equal(worstCaseInAnyInterval(admittedMs, [{ grantMs: T0 + 999, holdEndMs: T0 + 1999, slots: 1 }], 1000), 4);
      });

      it('carves slices of at most a quarter of the headroom, down to one slot near the limit', async () => {
        await store.configure([pool('p', { a: [{ requests: 20, perMs: 1000 }] })]);
        const slices: number[] = [];
        for (let i = 0; i < 11; i++) {
          const decision = await lease(['a'], 100, 0);
          slices.push(decision.grants[0]!.slots);
        }
        assert.deepEqual(slices, [5, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1]);
        assert.deepEqual(await lease(['a'], 100, 0), { grants: [], retryAfterMs: 1000 });
      });

      it('gives a key with no limits the full share', async () => {
        await store.configure([pool('p', { free: [], capped: [{ requests: 20, perMs: 1000 }] })]);
        assert.deepEqual((await lease(['free', 'capped'], 40, 0)).grants, [
          { keyId: 'free', slots: 20 },
          { keyId: 'capped', slots: 5 },
        ]);
        assert.deepEqual((await lease(['free'], 1000, 0)).grants, [{ keyId: 'free', slots: 1000 }]);
        assert.equal(await grantedKey('p', ['free']), 'free');
      });

      it('treats wantedSlots 0 as 1', async () => {
        await store.configure([pool('p', { a: [{ requests: 100, perMs: 1000 }] })]);
        assert.deepEqual(await lease(['a'], 0, 0), { grants: [{ keyId: 'a', slots: 1 }], retryAfterMs: undefined });
        assert.deepEqual(await remaining('a'), [99]);
      });

      it('splits wantedSlots over the eligible keys, least recently granted first, never granting more than wanted', async () => {
        const limits = [{ requests: 100, perMs: 1000 }];
        await store.configure([pool('p', { a: limits, b: limits, c: limits })]);
        // Fresh keys tie: candidate order; each takes ceil(unassigned / keys left).
        assert.deepEqual((await lease(['c', 'a', 'b'], 10, 0)).grants, [
          { keyId: 'c', slots: 4 },
          { keyId: 'a', slots: 3 },
          { keyId: 'b', slots: 3 },
        ]);
        // Fewer slots than keys: the least recently granted keys get one each, the rest nothing.
        assert.deepEqual((await lease(['a', 'b', 'c'], 2, 0)).grants, [
          { keyId: 'c', slots: 1 },
          { keyId: 'a', slots: 1 },
        ]);
        await store.cool({ poolId: 'p', keyId: 'b' }, T0 + 1, 'provider answered 429', clock.nowMs());
        assert.deepEqual((await lease(['a', 'b', 'c'], 9, 0)).grants, [
          { keyId: 'c', slots: 5 },
          { keyId: 'a', slots: 4 },
        ]);
      });

      it('gives cooling, parked, full and unknown keys nothing, and retries after the earliest wait', async () => {
        const limits = [{ requests: 2, perMs: 1000 }];
        await store.configure([pool('p', { cooling: limits, parked: limits, full: limits, free: limits })]);
        await store.cool({ poolId: 'p', keyId: 'cooling' }, T0 + 3000, 'provider answered 429', clock.nowMs());
        await store.park({ poolId: 'p', keyId: 'parked' }, 'provider answered 401', clock.nowMs());
        await grantedKey('p', ['full']);
        await grantedKey('p', ['full']);
        assert.deepEqual(await lease(['cooling', 'parked', 'full', 'gone'], 5, 0), { grants: [], retryAfterMs: 1000 });
        assert.deepEqual(await lease(['cooling', 'parked'], 5, 0), { grants: [], retryAfterMs: 3000 });
        assert.deepEqual(await lease(['parked', 'gone'], 5, 0), { grants: [], retryAfterMs: undefined });
        assert.deepEqual(await lease([], 5, 0), { grants: [], retryAfterMs: undefined });
        const [unknownPool] = await store.lease([{ poolId: 'q', keyIds: ['free'], wantedSlots: 5 }], clock.nowMs(), 0);
        assert.deepEqual(unknownPool, { grants: [], retryAfterMs: undefined });
        assert.deepEqual((await lease(['cooling', 'parked', 'full', 'free'], 5, 0)).grants, [{ keyId: 'free', slots: 1 }]);
        clock.set(T0 + 3000);
        assert.deepEqual((await lease(['cooling', 'parked'], 5, 0)).grants, [{ keyId: 'cooling', slots: 1 }]);
      });

      describe('returns', () => {
        const returnOf = (grant: LeaseGrant, slots: number) => ({ poolId: 'p', keyId: grant.keyId, leaseId: grant.leaseId, slots, tokens: 0 });

        async function fullWindowWithLease(): Promise<LeaseGrant> {
          await store.configure([pool('p', { a: [{ requests: 12, perMs: 1000 }] })]);
          const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 3 }], clock.nowMs(), 500);
          const grant = decision!.grants[0]!;
          assert.equal(grant.slots, 3);
          for (let i = 0; i < 9; i++) await grantedKey('p', ['a']);
          // Admissions after the lease are recorded at its stamp, so the log stays in time order.
          assert.equal(await retryAfterMs('p', ['a']), 1500);
          return grant;
        }

        it('frees exactly the slots given back: at the limit, returning one admits exactly one more', async () => {
          const grant = await fullWindowWithLease();
          clock.advance(100);
          await store.lease([], clock.nowMs(), 500, [returnOf(grant, 1)]);
          await grantedKey('p', ['a']);
          assert.equal(await retryAfterMs('p', ['a']), 1400);
          clock.set(T0 + 1499);
          assert.deepEqual(await remaining('a'), [0]);
          clock.set(T0 + 1500);
          assert.deepEqual(await remaining('a'), [12]);
        });

        it('frees the returned slots for the grant it rides with', async () => {
          const grant = await fullWindowWithLease();
          const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 1 }], clock.nowMs(), 500, [returnOf(grant, 1)]);
          assert.equal(decision!.grants[0]!.slots, 1);
          assert.equal(await retryAfterMs('p', ['a']), 1500);
        });

        it('frees a lease once, and never more than it was granted', async () => {
          const grant = await fullWindowWithLease();
          await store.lease([], clock.nowMs(), 500, [returnOf(grant, 10)]);
          await store.lease([], clock.nowMs(), 500, [returnOf(grant, 10), returnOf(grant, 1)]);
          for (let i = 0; i < 3; i++) await grantedKey('p', ['a']);
          assert.equal(await retryAfterMs('p', ['a']), 1500);
        });

        it('frees nothing for a lease already out of its window, nor for a lease id it never granted', async () => {
          await store.configure([pool('p', { a: [{ requests: 4, perMs: 1000 }] })]);
          const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 1 }], clock.nowMs(), 500);
          const grant = decision!.grants[0]!;
          clock.set(T0 + 1500);
          for (let i = 0; i < 4; i++) await grantedKey('p', ['a']);
          await store.lease([], clock.nowMs(), 500, [returnOf(grant, 1), { ...returnOf(grant, 1), leaseId: `${grant.leaseId}9` }]);
          assert.equal(await retryAfterMs('p', ['a']), 1000);
        });

        it('still frees the slots after a config change that kept the key\'s limits and changed only how keys are chosen', async () => {
          const grant = await fullWindowWithLease();
          await store.configure([{ poolId: 'p', keySelection: 'cheapest', keys: [{ keyId: 'a', limits: [{ requests: 12, perMs: 1000 }], cost: 5 }] }]);
          await store.lease([], clock.nowMs(), 500, [returnOf(grant, 1)]);
          await grantedKey('p', ['a']);
          assert.equal(await retryAfterMs('p', ['a']), 1500);
        });

        it('frees no window slots after the key\'s limits changed, as its windows were rebuilt', async () => {
          const grant = await fullWindowWithLease();
          await store.configure([pool('p', { a: [{ requests: 13, perMs: 1000 }] })]);
          await grantedKey('p', ['a']);
          await store.lease([], clock.nowMs(), 500, [returnOf(grant, 3)]);
          assert.equal(await retryAfterMs('p', ['a']), 1500);
        });
      });

      it('decides a batch of leases in order, each seeing the slots granted before it', async () => {
        await store.configure([pool('p', { a: [{ requests: 8, perMs: 1000 }] })]);
        const request = { poolId: 'p', keyIds: ['a'], wantedSlots: 100 };
        const decisions = await store.lease([request, request, request], clock.nowMs(), 0);
        assert.deepEqual(
          decisions.map((d) => withoutLeaseIds(d).grants),
          [[{ keyId: 'a', slots: 2 }], [{ keyId: 'a', slots: 1 }], [{ keyId: 'a', slots: 1 }]],
        );
        assert.deepEqual(await remaining('a'), [4]);
      });

      it('never lets ordinary and leased admissions exceed a limit in any interval, wherever the slots are spent', async function () {
        this.timeout(30_000);
        const limits: Record<string, WindowLimit[]> = {
          a: [{ requests: 5, perMs: 1000 }],
          b: [{ requests: 12, perMs: 1000 }],
          c: [{ requests: 50, perMs: 1000 }],
          d: [{ requests: 20, perMs: 1000 }, { requests: 60, perMs: 5000 }],
          e: [{ requests: 7, perMs: 1000 }],
        };
        const keyIds = Object.keys(limits);
        await store.configure([pool('p', limits)]);
        const random = seededRandom(20_240_917);
        const pick = (n: number): number => Math.floor(random() * n);
        const someKeys = (): string[] => (random() < 0.3 ? keyIds.filter(() => random() < 0.6) : keyIds);
        const admitted = new Map<string, number[]>(keyIds.map((k) => [k, []]));
        const leased = new Map<string, LeasedSlots[]>(keyIds.map((k) => [k, []]));
        const stats = { acquired: 0, acquireDenied: 0, leased: 0, multiSlot: 0, leaseDenied: 0, exactRetries: 0 };
        const recordLease = (decision: LeaseDecision, candidates: readonly string[], holdMs: number): void => {
          for (const grant of decision.grants) {
            assert.ok(candidates.includes(grant.keyId) && grant.slots >= 1, JSON.stringify(grant));
            leased.get(grant.keyId)!.push({ grantMs: clock.nowMs(), holdEndMs: clock.nowMs() + holdMs, slots: grant.slots });
            stats.leased++;
            if (grant.slots > 1) stats.multiSlot++;
          }
        };
        const leaseNow = async (candidates: readonly string[], wantedSlots: number, holdMs: number): Promise<LeaseDecision> => {
          const [decision] = await store.lease([{ poolId: 'p', keyIds: candidates, wantedSlots }], clock.nowMs(), holdMs);
          recordLease(decision!, candidates, holdMs);
          return decision!;
        };

        for (let step = 0; step < 6000; step++) {
          const r = random();
          clock.advance(r < 0.4 ? 0 : r < 0.95 ? pick(60) : pick(2500));
          const nowMs = clock.nowMs();
          const op = random();
          const ref = { poolId: 'p', keyId: keyIds[pick(keyIds.length)]! };
          if (op < 0.02) {
            await store.cool(ref, nowMs + pick(3000), 'provider answered 429', nowMs);
          } else if (op < 0.025) {
            await store.park(ref, 'provider answered 401', nowMs);
          } else if (op < 0.04) {
            await store.unpark(ref, nowMs);
          } else if (op < 0.5) {
            const requests = Array.from({ length: 1 + pick(3) }, () => ({ poolId: 'p', keyIds: someKeys() }));
            const decisions = await store.acquire(requests, nowMs);
            decisions.forEach((decision, i) => {
              if (!decision.granted) {
                stats.acquireDenied++;
                return;
              }
              assert.ok(requests[i]!.keyIds.includes(decision.keyId));
              admitted.get(decision.keyId)!.push(nowMs);
              stats.acquired++;
            });
          } else if (op < 0.6) {
            const holdMs = pick(2001);
            const requests = Array.from({ length: 2 + pick(2) }, () => ({ poolId: 'p', keyIds: someKeys(), wantedSlots: pick(31) }));
            const decisions = await store.lease(requests, nowMs, holdMs);
            decisions.forEach((decision, i) => recordLease(decision, requests[i]!.keyIds, holdMs));
          } else {
            const holdMs = pick(2001);
            const candidates = someKeys();
            const wantedSlots = pick(31);
            const before = await store.snapshot('p', nowMs);
            const stateOf = (keyId: string) => before.find((s) => s.keyId === keyId)!;
            const decision = await leaseNow(candidates, wantedSlots, holdMs);
            // The slice rule, against the store's own view just before the lease.
            const eligible = candidates.flatMap((keyId) => {
              const available = Math.min(...stateOf(keyId).windows.map((w) => w.remaining));
              return stateOf(keyId).condition === 'READY' && available > 0 ? [{ keyId, available }] : [];
            });
            const capOf = new Map(eligible.map(({ keyId, available }) => [keyId, Math.max(1, Math.floor(available / 4))]));
            const granted = decision.grants.reduce((sum, g) => sum + g.slots, 0);
            for (const grant of decision.grants) {
              assert.ok(capOf.has(grant.keyId), `step ${step}: ${grant.keyId} was not eligible`);
              assert.ok(grant.slots >= 1 && grant.slots <= capOf.get(grant.keyId)!, `step ${step}: ${grant.keyId} got ${grant.slots}`);
            }
            // Never more than wanted (an unspent slot stays counted), and something whenever a key could take it.
            assert.ok(granted <= Math.max(1, wantedSlots), `step ${step}: granted ${granted} of ${wantedSlots} wanted`);
            assert.equal(granted > 0, eligible.length > 0, `step ${step}: granted ${granted} with ${eligible.length} eligible`);
            if (decision.grants.length > 0) continue;
            stats.leaseDenied++;
            const allParked = candidates.every((keyId) => stateOf(keyId).condition === 'PARKED');
            assert.equal(decision.retryAfterMs === undefined, allParked, `step ${step}: retry-after ${decision.retryAfterMs}`);
            if (!allParked && random() < 0.3) {
              // The retry-after is exact: nothing a millisecond sooner, a slice right on it.
              const waitMs = decision.retryAfterMs!;
              if (waitMs > 1) {
                clock.set(nowMs + waitMs - 1);
                assert.deepEqual((await leaseNow(candidates, 1, holdMs)).grants, [], `step ${step}: a slice before the retry-after`);
              }
              clock.set(nowMs + waitMs);
              assert.ok((await leaseNow(candidates, 1, holdMs)).grants.length > 0, `step ${step}: no slice at the retry-after`);
              stats.exactRetries++;
            }
          }
        }

        for (const keyId of keyIds) {
          for (const window of limits[keyId]!) {
            const worst = worstCaseInAnyInterval(admitted.get(keyId)!, leased.get(keyId)!, window.perMs);
            assert.ok(worst <= window.requests, `${keyId}: ${worst} may land in one ${window.perMs} ms interval, limit ${window.requests}`);
            // The run must have pushed every window to its limit, or it proves little.
            if (window.perMs === 1000) assert.equal(worst, window.requests, `${keyId} never reached its limit`);
          }
        }
        assert.ok(
          stats.acquired > 2000 && stats.acquireDenied > 1000 && stats.leased > 3000 && stats.multiSlot > 1000 && stats.leaseDenied > 400 && stats.exactRetries > 100,
          JSON.stringify(stats),
        );
      });
    });

    describe('concurrency holds', () => {
      const TTL_MS = 2_000;

      /** Key a (cap 2, plus 100 per second so headroom ties stay out of it) and key b without a cap. */
      beforeEach(async () => {
        await store.configure([
          { poolId: 'p', keys: [{ keyId: 'a', limits: [{ requests: 100, perMs: 1000 }], concurrency: 2 }, { keyId: 'b', limits: [] }] },
        ]);
      });

      async function hold(): Promise<AcquireDecision & { granted: true }> {
        const [decision] = await store.acquire([{ poolId: 'p', keyIds: ['a'] }], clock.nowMs(), TTL_MS);
        assert.ok(decision!.granted, `expected a grant at +${clock.nowMs() - T0} ms, got ${JSON.stringify(decision)}`);
        assert.ok(decision.holdId !== undefined && decision.holdId !== '', 'a capped key\'s grant carries a hold');
        return decision;
      }

      async function denialMs(): Promise<number | undefined> {
        const [decision] = await store.acquire([{ poolId: 'p', keyIds: ['a'] }], clock.nowMs(), TTL_MS);
        assert.equal(decision!.granted, false, `expected a denial at +${clock.nowMs() - T0} ms`);
        return decision!.granted ? -1 : decision!.retryAfterMs;
      }

      async function inFlight(): Promise<number | undefined> {
        const states = await store.snapshot('p', clock.nowMs());
        return states.find((s) => s.keyId === 'a')!.concurrency?.inFlight;
      }

      it('admits exactly the cap, and the next with a retry-after of the earliest hold expiry', async () => {
        await hold();
        clock.set(T0 + 300);
        await hold();
        assert.equal(await inFlight(), 2);
        clock.set(T0 + 500);
        assert.equal(await denialMs(), TTL_MS - 500);
      });

      it('frees a released hold at once, and only that one', async () => {
        const first = await hold();
        const second = await hold();
        assert.notEqual(first.holdId, second.holdId);
        await store.release([{ poolId: 'p', keyId: 'a', holdId: first.holdId! }], clock.nowMs());
        assert.equal(await inFlight(), 1);
        await hold();
        await denialMs();
        // A second release of the same hold frees nothing more.
        await store.release([{ poolId: 'p', keyId: 'a', holdId: first.holdId! }], clock.nowMs());
        assert.equal(await inFlight(), 2);
      });

      it('frees a hold nobody released at its expiry, not a millisecond before', async () => {
        await hold();
        await hold();
        clock.set(T0 + TTL_MS - 1);
        assert.equal(await denialMs(), 1);
        clock.set(T0 + TTL_MS);
        assert.equal(await inFlight(), 0);
        await hold();
      });

      it('extends a renewed hold from the renewal, and does not bring back an expired one', async () => {
        const first = await hold();
        const second = await hold();
        clock.set(T0 + 1_500);
        const ref = { poolId: 'p', keyId: 'a' };
        assert.deepEqual(await store.renew([{ ...ref, holdId: first.holdId! }], clock.nowMs(), TTL_MS), [true]);
        clock.set(T0 + TTL_MS);
        // The second expired; the renewed first holds until +1500 + TTL.
        assert.equal(await inFlight(), 1);
        assert.deepEqual(await store.renew([{ ...ref, holdId: second.holdId! }], clock.nowMs(), TTL_MS), [false]);
        await hold();
        assert.equal(await denialMs(), 1_500);
        clock.set(T0 + 1_500 + TTL_MS);
        assert.equal(await inFlight(), 1);
      });

      it('takes no hold on a key without a cap, and never leases a capped key', async () => {
        const [decision] = await store.acquire([{ poolId: 'p', keyIds: ['b'] }], clock.nowMs(), TTL_MS);
        assert.ok(decision!.granted && decision.holdId === undefined);
        const [leased] = await store.lease([{ poolId: 'p', keyIds: ['a', 'b'], wantedSlots: 10 }], clock.nowMs(), 500);
        assert.deepEqual(leased!.grants.map((g) => g.keyId), ['b']);
      });

      it('keeps a key\'s cap and its holds when it learns a request limit from the provider', async () => {
        await store.configure([{ poolId: 'p', keys: [{ keyId: 'c', limits: [], concurrency: 1 }] }]);
        const [first] = await store.acquire([{ poolId: 'p', keyIds: ['c'] }], clock.nowMs(), TTL_MS);
        assert.ok(first!.granted && first.holdId !== undefined);
        await store.learn({ poolId: 'p', keyId: 'c' }, { limit: { requests: 50, perMs: 60_000 }, remainingRequests: undefined }, clock.nowMs());
        await store.configure([{ poolId: 'p', keys: [{ keyId: 'c', limits: [], concurrency: 1 }] }]);
        const [second] = await store.acquire([{ poolId: 'p', keyIds: ['c'] }], clock.nowMs(), TTL_MS);
        assert.equal(second!.granted, false, 'the one slot is still held');
        const states = await store.snapshot('p', clock.nowMs());
        assert.deepEqual(states[0]!.concurrency, { limit: 1, inFlight: 1 });
        assert.equal(states[0]!.windows[0]!.requests, 50);
      });

      it('keeps holds in flight counted across a change of the cap', async () => {
        await hold();
        await hold();
        await store.configure([{ poolId: 'p', keys: [{ keyId: 'a', limits: [{ requests: 100, perMs: 1000 }], concurrency: 3 }] }]);
        assert.equal(await inFlight(), 2);
        await hold();
        await denialMs();
      });
    });

    it('never exceeds any limit in any interval under thousands of random arrivals', async function () {
      this.timeout(20_000);
      const limits: Record<string, WindowLimit[]> = {
        a: [{ requests: 5, perMs: 1000 }, { requests: 40, perMs: 20_000 }],
        b: [{ requests: 3, perMs: 500 }],
        c: [{ requests: 10, perMs: 2000 }, { requests: 25, perMs: 10_000 }],
        d: [{ requests: 8, perMs: 3000 }],
      };
      const keyIds = Object.keys(limits);
      await store.configure([pool('p', limits)]);
      const random = seededRandom(20_240_601);
      const grants = new Map<string, number[]>(keyIds.map((k) => [k, []]));
      const headroom = (keyId: string, nowMs: number): number =>
        Math.min(...limits[keyId]!.map((w) => (w.requests - countInWindow(grants.get(keyId)!, w.perMs, nowMs)) / w.requests));
      let granted = 0;
      let denied = 0;
      let exactRetries = 0;
      for (let step = 0; step < 6000; step++) {
        const r = random();
        clock.advance(r < 0.5 ? 0 : Math.floor(random() * (r < 0.97 ? 40 : 3000)));
        const candidates = random() < 0.3 ? keyIds.filter(() => random() < 0.6) : keyIds;
        const nowMs = clock.nowMs();
        const decision = await acquire('p', candidates);
        if (decision.granted) {
          granted++;
          // The reference model agrees the key had room, and that none had more.
          assert.ok(candidates.includes(decision.keyId));
          const chosen = headroom(decision.keyId, nowMs);
          assert.ok(chosen > 0, `granted full key ${decision.keyId} at step ${step}`);
          for (const other of candidates) assert.ok(headroom(other, nowMs) <= chosen, `step ${step}: ${other} had more headroom`);
          grants.get(decision.keyId)!.push(nowMs);
          continue;
        }
        denied++;
        for (const keyId of candidates) assert.equal(headroom(keyId, nowMs), 0, `step ${step}: denied while ${keyId} had room`);
        if (candidates.length === 0) {
          assert.equal(decision.retryAfterMs, undefined);
        } else if (random() < 0.2) {
          // The retry-after is exact: nothing a millisecond sooner, a grant right on it.
          const waitMs = decision.retryAfterMs!;
          if (waitMs > 1) {
            clock.set(nowMs + waitMs - 1);
            assert.equal((await acquire('p', candidates)).granted, false);
          }
          clock.set(nowMs + waitMs);
          const retried = await acquire('p', candidates);
          assert.ok(retried.granted, `step ${step}: no grant at the retry-after`);
          grants.get(retried.keyId)!.push(clock.nowMs());
          exactRetries++;
        }
      }
      for (const keyId of keyIds) {
        for (const window of limits[keyId]!) {
          assert.ok(
            maxInAnyInterval(grants.get(keyId)!, window.perMs) <= window.requests,
            `${keyId} exceeded ${window.requests}/${window.perMs}ms`,
          );
        }
      }
      // The run must actually have pushed every key to its limits.
      assert.ok(granted > 1000 && denied > 1000 && exactRetries > 100, `granted ${granted}, denied ${denied}, retries ${exactRetries}`);
      for (const keyId of keyIds) {
        const peak = Math.min(...limits[keyId]!.map((w) => w.requests - maxInAnyInterval(grants.get(keyId)!, w.perMs)));
        assert.equal(peak, 0, `${keyId} never reached a limit`);
      }
    });
  });
}
