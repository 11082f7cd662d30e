import assert from 'node:assert/strict';
import { fromBinary } from '@bufbuild/protobuf';
import { createMemoryBus, Subjects } from '@keymesh/bus';
import { FakeClock } from '@keymesh/clock';
import { create } from '@bufbuild/protobuf';
import { AcquireRequestSchema, GetKeyStateRequestSchema, KeyParkedEventSchema, ReleaseRequestSchema } from '@keymesh/proto/limiter/v1/limiter';
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
});
