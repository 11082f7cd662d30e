import assert from 'node:assert/strict';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { createMemoryBus, Subjects } from '@keymesh/bus';
import { FakeClock } from '@keymesh/clock';
import {
  AcquireBatchRequestSchema,
  AcquireOutcome,
  AcquireRequestSchema,
  GetKeyStateRequestSchema,
  GetKeyStateResponseSchema,
  GrantLeasesRequestSchema,
  KeyParkedEventSchema,
  Priority,
  ReleaseRequestSchema,
} from '@keymesh/proto/limiter/v1/limiter';
import type { CallContext } from '@keymesh/rpc';
import { KeyPoolLimiter } from './domain/key-pool-limiter';
import { limiterHandlers } from './handlers';
import { MemoryLimiterStore } from './store/memory';

describe('limiter handlers', () => {
  it('publishes keymesh.keys.parked, with no secret in it, when a 401 parks a key', async () => {
    const clock = new FakeClock();
    const limiter = new KeyPoolLimiter(new MemoryLimiterStore());
    await limiter.applyPools([{ poolId: 'main', keys: [{ keyId: 'k1', limits: [] }] }]);
    const bus = createMemoryBus();
    const parked = bus.subscribe(Subjects.keyParked);
    const handlers = limiterHandlers(limiter, clock, bus);
    const ctx = {} as CallContext;
    await handlers.reportOutcome({ $typeName: 'keymesh.limiter.v1.ReportOutcomeRequest', poolId: 'main', keyId: 'k1', httpStatus: 200, learnedLimitRequests: 0, quotaExhausted: false }, ctx);
    await handlers.reportOutcome({ $typeName: 'keymesh.limiter.v1.ReportOutcomeRequest', poolId: 'main', keyId: 'k1', httpStatus: 401, learnedLimitRequests: 0, quotaExhausted: false }, ctx);
    for await (const message of parked) {
      const event = fromBinary(KeyParkedEventSchema, message.data);
      assert.equal(event.poolId, 'main');
      assert.equal(event.keyId, 'k1');
      assert.equal(event.httpStatus, 401);
      assert.equal(event.reason, 'provider answered 401');
      break;
    }
    await bus.close();
  });

  it('lets only PRIORITY_HIGH acquires and leases into a pool\'s reserve_for_high share', async () => {
    const clock = new FakeClock(1_700_000_000_000);
    const limiter = new KeyPoolLimiter(new MemoryLimiterStore());
    await limiter.applyPools([{ poolId: 'main', reserveForHigh: 0.5, keys: [{ keyId: 'k1', limits: [{ requests: 2, perMs: 60_000 }] }] }]);
    const handlers = limiterHandlers(limiter, clock);
    const ctx = {} as CallContext;
    const acquire = async (priority: Priority) =>
      (await handlers.acquireBatch(create(AcquireBatchRequestSchema, { requests: [{ poolId: 'main', priority }] }), ctx)).responses![0]!;
    assert.equal((await acquire(Priority.NORMAL)).outcome, AcquireOutcome.GRANTED);
    assert.equal((await acquire(Priority.UNSPECIFIED)).outcome, AcquireOutcome.DENIED);
    const lease = async (priority: Priority) =>
      (await handlers.grantLeases(create(GrantLeasesRequestSchema, { requests: [{ poolId: 'main', wantedSlots: 1, priority }] }), ctx)).pools![0]!;
    assert.equal((await lease(Priority.LOW)).leases!.length, 0);
    assert.deepEqual((await lease(Priority.HIGH)).leases!.map((l) => [l.keyId, l.slots]), [['k1', 1]]);
  });

  it('shows a burst window apart from the window it was derived from in GetKeyState', async () => {
    const clock = new FakeClock(1_700_000_000_000);
    const limiter = new KeyPoolLimiter(new MemoryLimiterStore());
    await limiter.applyPools([
      { poolId: 'main', keys: [{ keyId: 'k1', limits: [{ requests: 60, perMs: 60_000 }, { requests: 10, perMs: 10_000, burst: true }] }] },
    ]);
    for (let i = 0; i < 10; i++) assert.equal((await limiter.acquire({ poolId: 'main' }, clock.nowMs())).granted, true);
    assert.deepEqual(await limiter.acquire({ poolId: 'main' }, clock.nowMs()), { granted: false, retryAfterMs: 10_000, reason: 'KEY_POOL_EXHAUSTED' });
    const handlers = limiterHandlers(limiter, clock);
    const { keys } = await handlers.getKeyState(create(GetKeyStateRequestSchema, { poolId: 'main' }), {} as CallContext);
    const key = keys![0]!;
    assert.equal(key.limitRequests, 60);
    assert.equal(key.remainingRequests, 50);
    assert.equal(key.burstWindows!.length, 1);
    assert.equal(key.burstWindows![0]!.limitRequests, 10);
    assert.equal(key.burstWindows![0]!.remainingRequests, 0);
    assert.equal(Number(key.burstWindows![0]!.window!.seconds), 10);
  });

  it('answers a hold and its TTL on a capped key, frees it on Release, and names renewals that came too late', async () => {
    const clock = new FakeClock();
    clock.set(1_700_000_000_000);
    const limiter = new KeyPoolLimiter(new MemoryLimiterStore(), 2_000);
    await limiter.applyPools([{ poolId: 'main', keys: [{ keyId: 'k1', limits: [], concurrency: 1 }] }]);
    const handlers = limiterHandlers(limiter, clock);
    const ctx = {} as CallContext;
    const acquire = () => handlers.acquire(create(AcquireRequestSchema, { poolId: 'main' }), ctx);
    const first = await acquire();
    assert.ok(first.holdId !== '' && first.holdId !== undefined);
    assert.deepEqual(first.holdTtl, { seconds: 2n, nanos: 0 });
    assert.equal((await acquire()).keyId ?? '', '', 'the one slot is taken');
    const hold = { poolId: 'main', keyId: 'k1', holdId: first.holdId! };
    const renewed = await handlers.release(create(ReleaseRequestSchema, { renewals: [hold] }), ctx);
    assert.deepEqual(renewed.expiredRenewals ?? [], []);
    await handlers.release(create(ReleaseRequestSchema, { releases: [hold] }), ctx);
    const second = await acquire();
    assert.equal(second.keyId, 'k1');
    clock.set(clock.nowMs() + 2_000);
    const late = await handlers.release(create(ReleaseRequestSchema, { renewals: [{ poolId: 'main', keyId: 'k1', holdId: second.holdId! }] }), ctx);
    assert.deepEqual(late.expiredRenewals?.map((h) => h.holdId), [second.holdId]);
    const { keys } = await handlers.getKeyState(create(GetKeyStateRequestSchema, { poolId: 'main' }), ctx);
    assert.equal(keys?.[0]?.concurrencyLimit, 1);
    assert.equal(keys?.[0]?.holdsInFlight, 0);
  });

  it('answers GetKeyState with whole-millisecond times when the store keeps fractions (the Redis clock)', async () => {
    const clock = new FakeClock();
    clock.set(1_700_000_000_000.25);
    const limiter = new KeyPoolLimiter(new MemoryLimiterStore());
    await limiter.applyPools([
      { poolId: 'main', keys: [{ keyId: 'k1', limits: [], quotas: [{ unit: 'requests', limit: 5, period: 'day', timeZone: 'UTC' }] }] },
    ]);
    const handlers = limiterHandlers(limiter, clock);
    const ctx = {} as CallContext;
    await handlers.reportOutcome(
      { $typeName: 'keymesh.limiter.v1.ReportOutcomeRequest', poolId: 'main', keyId: 'k1', httpStatus: 429, learnedLimitRequests: 0, quotaExhausted: false },
      ctx,
    );
    const response = create(GetKeyStateResponseSchema, await handlers.getKeyState({ $typeName: 'keymesh.limiter.v1.GetKeyStateRequest', poolId: '' }, ctx));
    const decoded = fromBinary(GetKeyStateResponseSchema, toBinary(GetKeyStateResponseSchema, response));
    assert.equal(decoded.keys[0]!.coolingUntil!.nanos % 1_000_000, 0);
  });
});
