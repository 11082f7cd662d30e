import assert from 'node:assert/strict';
import type { FakeClock } from '@keymesh/clock';
import type { PoolSpec, WindowLimit } from '../domain/types';
import type { LimiterStore } from './store';

const T0 = 1_700_000_000_000;

function pool(keys: Record<string, WindowLimit[]>): PoolSpec {
  return { poolId: 'p', keys: Object.entries(keys).map(([keyId, limits]) => ({ keyId, limits })) };
}

/**
 * How every LimiterStore learns from the provider's rate-limit headers (run by
 * memory.test.ts and redis.test.ts alike, beside describeLimiterStore). A
 * second store on the same state stands for another replica where the store
 * can have one (`makeReplica`).
 */
export function describeLearning(
  name: string,
  makeStore: () => Promise<{ store: LimiterStore; makeReplica: (() => Promise<LimiterStore>) | undefined }>,
  clock: FakeClock,
): void {
  describe(`LimiterStore learning: ${name}`, () => {
    let store: LimiterStore;
    let makeReplica: (() => Promise<LimiterStore>) | undefined;
    const replicas: LimiterStore[] = [];

    beforeEach(async () => {
      clock.set(T0);
      ({ store, makeReplica } = await makeStore());
    });

    afterEach(async () => {
      for (const replica of replicas.splice(0)) await replica.close();
      await store.close();
    });

    async function grants(on: LimiterStore, count: number): Promise<number> {
      let granted = 0;
      for (let i = 0; i < count; i++) {
        const [decision] = await on.acquire([{ poolId: 'p', keyIds: ['a'] }], clock.nowMs());
        if (decision!.granted) granted++;
      }
      return granted;
    }

    it('follows a limit learned for a key declared without limits, counting what the provider said was spent', async () => {
      await store.configure([pool({ a: [] })]);
      // The first answer: 3 per second, 2 left (the request that brought the headers).
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: { requests: 3, perMs: 1000 }, remainingRequests: 2 }, clock.nowMs());
      assert.equal(await grants(store, 5), 2);
      const [denied] = await store.acquire([{ poolId: 'p', keyIds: ['a'] }], clock.nowMs());
      assert.deepEqual(denied, { granted: false, retryAfterMs: 1000 });
      clock.advance(1000);
      assert.equal(await grants(store, 5), 3);
    });

    it('keeps a key\'s token window and its spent quota when it learns a request limit', async () => {
      await store.configure([
        { poolId: 'p', keys: [{ keyId: 'a', limits: [], tokenLimits: [{ tokens: 100, perMs: 60_000 }], quotas: [{ unit: 'requests', limit: 3, period: 'day', timeZone: 'UTC' }] }] },
      ]);
      const [first] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens: 60 }], clock.nowMs());
      assert.equal(first!.granted, true);
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: { requests: 50, perMs: 1000 }, remainingRequests: undefined }, clock.nowMs());
      // 60 of the 100 tokens are still spent, and one of the day's 3 requests.
      const [tooManyTokens] = await store.acquire([{ poolId: 'p', keyIds: ['a'], tokens: 60 }], clock.nowMs());
      assert.equal(tooManyTokens!.granted, false);
      assert.equal(await grants(store, 5), 2);
    });

    it('keeps a learned limit when the same config is applied again, as every replica does', async () => {
      await store.configure([pool({ a: [] })]);
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: { requests: 2, perMs: 1000 }, remainingRequests: undefined }, clock.nowMs());
      await store.configure([pool({ a: [] })]);
      assert.equal(await grants(store, 5), 2);
      if (makeReplica === undefined) return;
      const replica = await makeReplica();
      replicas.push(replica);
      await replica.configure([pool({ a: [] })]);
      clock.advance(1000);
      assert.equal(await grants(replica, 5), 2, 'the other replica follows the learned limit');
    });

    it('lets a declared limit win over a learned one, and forgets the learned one once a limit is declared', async () => {
      await store.configure([pool({ a: [{ requests: 4, perMs: 1000 }] })]);
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: { requests: 2, perMs: 1000 }, remainingRequests: undefined }, clock.nowMs());
      assert.equal(await grants(store, 6), 4);
    });

    it('never shrinks a learned window for the same request count (a reset is at most the window)', async () => {
      await store.configure([pool({ a: [] })]);
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: { requests: 2, perMs: 1000 }, remainingRequests: undefined }, clock.nowMs());
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: { requests: 2, perMs: 300 }, remainingRequests: undefined }, clock.nowMs());
      assert.equal(await grants(store, 3), 2);
      clock.advance(500);
      assert.equal(await grants(store, 1), 0, 'still inside the 1 s window learned first');
    });

    it('takes a lower remaining count from the provider for a declared key, and never gives room back for a higher one', async () => {
      await store.configure([pool({ a: [{ requests: 10, perMs: 1000 }] })]);
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: undefined, remainingRequests: 9 }, clock.nowMs());
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: { requests: 10, perMs: 1000 }, remainingRequests: 3 }, clock.nowMs());
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: undefined, remainingRequests: 8 }, clock.nowMs());
      assert.equal(await grants(store, 10), 3);
    });

    it('caps lease slices by what the provider said remains', async () => {
      await store.configure([pool({ a: [{ requests: 100, perMs: 1000 }] })]);
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: undefined, remainingRequests: 2 }, clock.nowMs());
      let leased = 0;
      for (let i = 0; i < 5; i++) {
        const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 50 }], clock.nowMs(), 50);
        for (const grant of decision!.grants) leased += grant.slots;
      }
      assert.equal(leased, 2);
    });

    it('keeps a returned lease\'s slots counted once the provider\'s remaining count, which reckoned them spent, corrected the windows', async () => {
      await store.configure([pool({ a: [{ requests: 10, perMs: 1000 }] })]);
      const [decision] = await store.lease([{ poolId: 'p', keyIds: ['a'], wantedSlots: 2 }], clock.nowMs(), 50);
      const grant = decision!.grants[0]!;
      assert.equal(grant.slots, 2);
      // The provider saw 6 requests this store did not: 2 remain, and the 2 leased slots were counted as used.
      await store.learn({ poolId: 'p', keyId: 'a' }, { limit: undefined, remainingRequests: 2 }, clock.nowMs());
      await store.lease([], clock.nowMs(), 50, [{ poolId: 'p', keyId: 'a', leaseId: grant.leaseId, slots: 2, tokens: 0 }]);
      assert.equal(await grants(store, 10), 2);
    });

    it('answers undefined for a key it does not know', async () => {
      await store.configure([pool({ a: [] })]);
      assert.equal(await store.learn({ poolId: 'p', keyId: 'zz' }, { limit: { requests: 1, perMs: 1 }, remainingRequests: 0 }, clock.nowMs()), undefined);
    });
  });
}
