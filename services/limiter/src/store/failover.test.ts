import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { startPrivateRedis, waitFor, type PrivateServer } from '@keymesh/testing';
import type { PoolSpec } from '../domain/types';
import { FailoverLimiterStore, type FailureMode } from './failover';
import { RedisLimiterStore } from './redis';

const POOLS: PoolSpec[] = [{ poolId: 'main', keys: [{ keyId: 'k1', limits: [{ requests: 4, perMs: 10_000 }] }] }];
const candidates = [{ poolId: 'main', keyIds: ['k1'] }];

describe('the limiter while Redis is down', function () {
  this.timeout(30_000);
  let redis: PrivateServer;
  let client: Redis;
  let store: FailoverLimiterStore;
  const changes: boolean[] = [];

  async function start(mode: FailureMode): Promise<void> {
    redis = await startPrivateRedis();
    // Fail fast while disconnected instead of queueing commands for later.
    client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    await waitFor(() => client.status === 'ready' || undefined, { timeoutMs: 5_000, what: 'redis connection' });
    store = new FailoverLimiterStore(new RedisLimiterStore({ redis: client, prefix: 'failover-test', time: 'caller' }), {
      mode,
      callTimeoutMs: 200,
      probeIntervalMs: 50,
      onChange: (degraded) => changes.push(degraded),
    });
    await store.configure(POOLS);
  }

  afterEach(async () => {
    changes.length = 0;
    await store?.close();
    client?.disconnect();
    await redis?.stop();
  });

  it('fails closed: denies at once with a retry-after, and decides in Redis again once it is back', async () => {
    await start({ kind: 'closed' });
    assert.equal((await store.acquire(candidates, Date.now()))[0].granted, true);
    await redis.kill();
    const started = Date.now();
    const [denied] = await store.acquire(candidates, Date.now());
    assert.deepEqual(denied, { granted: false, retryAfterMs: 1_000 });
    assert.ok(Date.now() - started < 1_000, 'a dead Redis must not hold callers');
    assert.ok(store.degraded);
    assert.deepEqual((await store.lease([{ ...candidates[0], wantedSlots: 2 }], Date.now(), 1_000))[0].grants, []);

    await redis.restart();
    await waitFor(() => client.status === 'ready' || undefined, { timeoutMs: 10_000, what: 'redis reconnect' });
    await waitFor(async () => (await store.acquire(candidates, Date.now()))[0].granted || undefined, { timeoutMs: 5_000, what: 'a grant from Redis' });
    assert.equal(store.degraded, false);
    assert.deepEqual(changes, [true, false]);
  });

  it('fails open to this replica\'s share of each limit', async () => {
    await start({ kind: 'open', replicas: 2 });
    await redis.kill();
    const nowMs = Date.now();
    const decisions = [];
    for (let i = 0; i < 3; i++) decisions.push((await store.acquire(candidates, nowMs))[0].granted);
    // 4 per window shared by 2 replicas: this one may admit 2 on its own.
    assert.deepEqual(decisions, [true, true, false]);
  });

  it('fails open with the pool\'s key selection and high-priority reserve as configured', async () => {
    await start({ kind: 'open', replicas: 2 });
    const limits = [{ requests: 8, perMs: 10_000 }];
    await store.configure([
      { poolId: 'main', keySelection: 'weighted', reserveForHigh: 0.5, keys: [{ keyId: 'a', limits, weight: 3 }, { keyId: 'b', limits, weight: 1 }] },
    ]);
    await redis.kill();
    const nowMs = Date.now();
    const granted: string[] = [];
    for (let i = 0; i < 5; i++) {
      const [decision] = await store.acquire([{ poolId: 'main', keyIds: ['a', 'b'] }], nowMs);
      granted.push(decision!.granted ? decision!.keyId : '-');
    }
    // This replica's share is 4 of 8 per key, 2 of them kept for high priority; a takes 3 of every 4 it can.
    assert.deepEqual(granted, ['a', 'a', 'b', 'b', '-']);
    assert.equal((await store.acquire([{ poolId: 'main', keyIds: ['a', 'b'], high: true }], nowMs))[0]!.granted, true);
  });

  it('fails open to this replica\'s share of a concurrency cap, and gives a hold back to the store that took it', async () => {
    await start({ kind: 'open', replicas: 2 });
    await store.configure([{ poolId: 'main', keys: [{ keyId: 'k1', limits: [], concurrency: 4 }] }]);
    await redis.kill();
    const nowMs = Date.now();
    const first = (await store.acquire(candidates, nowMs, 10_000))[0]!;
    const second = (await store.acquire(candidates, nowMs, 10_000))[0]!;
    assert.ok(first.granted && second.granted);
    assert.equal((await store.acquire(candidates, nowMs, 10_000))[0]!.granted, false, 'half of 4 in flight on this replica');
    const ref = { poolId: 'main', keyId: 'k1', holdId: first.holdId! };
    assert.deepEqual(await store.renew([ref], nowMs, 10_000), [true]);
    await store.release([ref], nowMs);
    assert.equal((await store.acquire(candidates, nowMs, 10_000))[0]!.granted, true);
  });

  it('does not call a Redis hold expired because Redis could not answer: the renewal fails, to be asked again', async () => {
    await start({ kind: 'closed' });
    await store.configure([{ poolId: 'main', keys: [{ keyId: 'k1', limits: [], concurrency: 1 }] }]);
    const held = (await store.acquire(candidates, Date.now(), 30_000))[0]!;
    assert.ok(held.granted && held.holdId !== undefined);
    const ref = { poolId: 'main', keyId: 'k1', holdId: held.holdId };
    // A blip: Redis keeps its data but answers nothing for a while.
    redis.pause();
    try {
      await assert.rejects(store.renew([ref], Date.now(), 30_000), /cannot renew holds right now/);
    } finally {
      redis.resume();
    }
    // The hold kept its place in Redis through the blip (its TTL had not passed): renewed now.
    assert.deepEqual(await waitFor(async () => (await store.renew([ref], Date.now(), 30_000).catch(() => undefined)), { timeoutMs: 5_000, what: 'a renewal from Redis' }), [true]);
  });

  it('gives a lease back to the store that granted it: a local one to the local share while Redis is away', async () => {
    await start({ kind: 'open', replicas: 2 });
    await redis.kill();
    const nowMs = Date.now();
    const [leased] = await store.lease([{ ...candidates[0], wantedSlots: 1 }], nowMs, 1_000);
    const grant = leased.grants[0]!;
    assert.match(grant.leaseId, /^local-/);
    assert.equal((await store.acquire(candidates, nowMs))[0].granted, true);
    assert.equal((await store.acquire(candidates, nowMs))[0].granted, false);
    // Without its mark the id would name a lease of the shared store: the local share must not free it.
    const given = { poolId: 'main', keyId: 'k1', leaseId: grant.leaseId, slots: 1, tokens: 0 };
    await store.lease([], nowMs, 1_000, [{ ...given, leaseId: grant.leaseId.slice('local-'.length) }]);
    assert.equal((await store.acquire(candidates, nowMs))[0].granted, false);
    await store.lease([], nowMs, 1_000, [given]);
    assert.equal((await store.acquire(candidates, nowMs))[0].granted, true);
  });
});
