import assert from 'node:assert/strict';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { createMemoryBus, Subjects } from '@keymesh/bus';
import { FakeClock } from '@keymesh/clock';
import { GetKeyStateResponseSchema, KeyParkedEventSchema } from '@keymesh/proto/limiter/v1/limiter';
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
