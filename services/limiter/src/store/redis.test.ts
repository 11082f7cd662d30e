import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo } from 'node:net';
import Redis from 'ioredis';
import { FakeClock } from '@keymesh/clock';
import { redisForTests, startPrivateRedis, waitFor, type ExternalServer, type PrivateServer } from '@keymesh/testing';
import type { PoolSpec, WindowLimit } from '../domain/types';
import { seededRandom } from './interval-check';
import { MemoryLimiterStore } from './memory';
import { LIMITER_REDIS_OPTIONS, RedisLimiterStore } from './redis';
import { SETTLE_LUA } from './lua';
import { describeLearning } from './learn.behaviour';
import { describeLimiterStore } from './store.behaviour';
import type { LimiterStore } from './store';

const T0 = 1_700_000_000_000;

/** A fresh namespace per store: tests share a Redis with others and never flush it. */
function randomPrefix(): string {
  return `test-${randomBytes(6).toString('hex')}`;
}

describe('RedisLimiterStore', () => {
  let server: ExternalServer | undefined;
  let client: Redis | undefined;

  async function sharedClient(): Promise<Redis> {
    server ??= await redisForTests();
    client ??= new Redis(server.url);
    return client;
  }

  after(async () => {
    await client?.quit();
    await server?.stop();
  });

  describeLimiterStore(
    'redis',
    async () => new RedisLimiterStore({ redis: await sharedClient(), prefix: randomPrefix(), deleteOnClose: true, time: 'caller' }),
    new FakeClock(),
  );

  describeLearning(
    'redis',
    async () => {
      const prefix = randomPrefix();
      const redis = await sharedClient();
      return {
        store: new RedisLimiterStore({ redis, prefix, deleteOnClose: true, time: 'caller' }),
        makeReplica: async () => new RedisLimiterStore({ redis, prefix, time: 'caller' }),
      };
    },
    new FakeClock(),
  );
  describe('Redis time', () => {
    let store: RedisLimiterStore;

    beforeEach(async () => {
      store = new RedisLimiterStore({ redis: await sharedClient(), prefix: randomPrefix(), deleteOnClose: true, time: 'redis' });
    });

    afterEach(async () => {
      await store.close();
    });

    /** Wildly wrong and disagreeing callers: a year ago, an hour ahead, the epoch. */
    const skewedNowsMs = [Date.now() - 365 * 86_400_000, Date.now() + 3_600_000, 0];

    it('fills a window and retries after it by Redis\'s clock, whatever nowMs the callers pass', async () => {
      await store.configure([{ poolId: 'p', keys: [{ keyId: 'a', limits: [{ requests: 3, perMs: 60_000 }] }] }]);
      for (const nowMs of skewedNowsMs) {
        const [decision] = await store.acquire([{ poolId: 'p', keyIds: ['a'] }], nowMs);
        assert.ok(decision!.granted, `expected a grant at caller time ${nowMs}`);
      }
      // By the callers' clocks the three are a year apart; by Redis's they are milliseconds apart.
      const [denied] = await store.acquire([{ poolId: 'p', keyIds: ['a'] }], Date.now() + 365 * 86_400_000);
      assert.equal(denied!.granted, false);
      const retryAfterMs = denied!.granted ? 0 : denied!.retryAfterMs!;
      assert.ok(retryAfterMs > 59_000 && retryAfterMs <= 60_000, `retry-after ${retryAfterMs} ms`);
    });

    it('spends a daily quota and resets it at midnight by Redis\'s clock, for callers skewed by less than a day', async () => {
      await store.configure([{ poolId: 'p', keys: [{ keyId: 'a', limits: [], quotas: [{ unit: 'requests', limit: 2, period: 'day', timeZone: 'UTC' }] }] }]);
      for (const skewMs of [3_600_000, -3_600_000]) {
        const [decision] = await store.acquire([{ poolId: 'p', keyIds: ['a'] }], Date.now() + skewMs);
        assert.ok(decision!.granted);
      }
      const [denied] = await store.acquire([{ poolId: 'p', keyIds: ['a'] }], Date.now() + 3_600_000);
      const untilMidnightMs = Math.ceil((Date.now() + 1) / 86_400_000) * 86_400_000 - Date.now();
      const retryAfterMs = denied!.granted ? 0 : denied!.retryAfterMs!;
      assert.ok(Math.abs(retryAfterMs - untilMidnightMs) <= 50, `retry-after ${retryAfterMs} ms, midnight in ${untilMidnightMs} ms`);
    });

    it('keeps a cooling end the caller set as a duration from its own clock', async () => {
      await store.configure([{ poolId: 'p', keys: [{ keyId: 'a', limits: [] }] }]);
      const callerNowMs = skewedNowsMs[0]!;
      const state = await store.cool({ poolId: 'p', keyId: 'a' }, callerNowMs + 5_000, 'provider answered 429', callerNowMs);
      assert.equal(state?.condition, 'COOLING');
      // Read back in the caller's frame, and the wait counted on Redis's clock.
      assert.ok(Math.abs(state!.coolingUntilMs! - (callerNowMs + 5_000)) <= 50, `cooling until ${state!.coolingUntilMs}`);
      const [denied] = await store.acquire([{ poolId: 'p', keyIds: ['a'] }], skewedNowsMs[1]!);
      const retryAfterMs = denied!.granted ? 0 : denied!.retryAfterMs!;
      assert.ok(retryAfterMs > 4_900 && retryAfterMs <= 5_000, `retry-after ${retryAfterMs} ms`);
    });
  });

  describe('replicas', () => {
    const limits: Record<string, WindowLimit[]> = {
      a: [{ requests: 5, perMs: 1000 }],
      b: [{ requests: 12, perMs: 1000 }, { requests: 30, perMs: 5000 }],
      c: [{ requests: 3, perMs: 400 }],
    };
    const keyIds = Object.keys(limits);
    const pools: PoolSpec[] = [{ poolId: 'p', keys: keyIds.map((keyId) => ({ keyId, limits: limits[keyId]! })) }];

    interface Admission {
      readonly grantMs: number;
      /** The latest moment the admission may be spent (grantMs for an acquire). */
      readonly holdEndMs: number;
      readonly slots: number;
    }

    /**
     * Most admissions one [t, t + perMs) may hold, leased slots counted wherever
     * in their hold they are spent. Deliberately naive.
     */
    function worstCase(admissions: readonly Admission[], perMs: number): number {
      let max = 0;
      for (const start of admissions) {
        for (const startMs of [start.grantMs, start.holdEndMs]) {
          let count = 0;
          for (const a of admissions) if (a.grantMs < startMs + perMs && a.holdEndMs >= startMs) count += a.slots;
          if (count > max) max = count;
        }
      }
      return max;
    }

    /**
     * Fires many acquire and lease batches from both stores at once, each with
     * its own nowMs (so the stores also see time step back), and returns what
     * was granted per key.
     */
    async function hammer(replicas: readonly LimiterStore[], seed: number): Promise<Map<string, Admission[]>> {
      const random = seededRandom(seed);
      const granted = new Map<string, Admission[]>(keyIds.map((k) => [k, []]));
      const calls: Promise<void>[] = [];
      let nowMs = T0;
      for (let n = 0; n < 600; n++) {
        nowMs += Math.floor(random() * 25);
        const atMs = nowMs - Math.floor(random() * 30);
        const store = replicas[n % replicas.length]!;
        const someKeys = (): string[] => (random() < 0.4 ? keyIds.filter(() => random() < 0.6) : keyIds);
        if (random() < 0.7) {
          const requests = Array.from({ length: 1 + Math.floor(random() * 3) }, () => ({ poolId: 'p', keyIds: someKeys() }));
          calls.push(
            store.acquire(requests, atMs).then((decisions) => {
              for (const d of decisions) if (d.granted) granted.get(d.keyId)!.push({ grantMs: atMs, holdEndMs: atMs, slots: 1 });
            }),
          );
        } else {
          const holdMs = Math.floor(random() * 300);
          const requests = [{ poolId: 'p', keyIds: someKeys(), wantedSlots: Math.floor(random() * 12) }];
          calls.push(
            store.lease(requests, atMs, holdMs).then((decisions) => {
              for (const d of decisions) {
                for (const g of d.grants) granted.get(g.keyId)!.push({ grantMs: atMs, holdEndMs: atMs + holdMs, slots: g.slots });
              }
            }),
          );
        }
      }
      await Promise.all(calls);
      return granted;
    }

    function worstPerWindow(granted: Map<string, Admission[]>): { keyId: string; worst: number; limit: WindowLimit }[] {
      return keyIds.flatMap((keyId) => limits[keyId]!.map((limit) => ({ keyId, worst: worstCase(granted.get(keyId)!, limit.perMs), limit })));
    }

    it('never lets two replicas on one Redis admit more than a limit together under concurrent calls', async function () {
      this.timeout(30_000);
      const { url } = server ?? (server = await redisForTests());
      const prefix = randomPrefix();
      // Two connections, as two processes would have: their calls really interleave.
      const replicas = [
        new RedisLimiterStore({ redis: url, prefix, time: 'caller' }),
        new RedisLimiterStore({ redis: url, prefix, deleteOnClose: true, time: 'caller' }),
      ];
      try {
        await Promise.all(replicas.map((r) => r.configure(pools)));
        for (const seed of [1, 2, 3]) {
          const granted = await hammer(replicas, seed);
          for (const { keyId, worst, limit } of worstPerWindow(granted)) {
            assert.ok(worst <= limit.requests, `seed ${seed}: ${keyId} may take ${worst} in ${limit.perMs} ms, limit ${limit.requests}`);
          }
          // Every key reached its tightest limit, or the run proves little.
          for (const keyId of keyIds) {
            assert.equal(worstCase(granted.get(keyId)!, limits[keyId]![0]!.perMs), limits[keyId]![0]!.requests, `seed ${seed}: ${keyId}`);
          }
          // The next round starts after every window of this one has passed.
          await Promise.all(replicas.map((r) => r.configure([])));
          await Promise.all(replicas.map((r) => r.configure(pools)));
        }
      } finally {
        await replicas[0]!.close();
        await replicas[1]!.close();
      }
    });

    it('has a check that catches replicas that do not share their state', async () => {
      // The same load on two memory stores (each replica counting alone) must be caught.
      const replicas = [new MemoryLimiterStore(), new MemoryLimiterStore()];
      await Promise.all(replicas.map((r) => r.configure(pools)));
      const granted = await hammer(replicas, 1);
      assert.ok(worstPerWindow(granted).some(({ worst, limit }) => worst > limit.requests));
    });
  });

  describe('on a private Redis', () => {
    let privateRedis: PrivateServer;
    let admin: Redis;
    const pool: PoolSpec = { poolId: 'p', keys: [{ keyId: 'a', limits: [{ requests: 3, perMs: 1000 }] }, { keyId: 'b', limits: [] }] };

    before(async function () {
      this.timeout(20_000);
      privateRedis = await startPrivateRedis();
      admin = new Redis(privateRedis.url);
    });

    after(async () => {
      await admin?.quit();
      await privateRedis?.stop();
    });

    async function evalshaCalls(): Promise<number> {
      const stats = await admin.info('commandstats');
      const match = /cmdstat_evalsha:calls=(\d+)/.exec(stats);
      return match ? Number(match[1]) : 0;
    }

    it('decides a batch of acquires, and one of leases, in one script call each', async () => {
      const store = new RedisLimiterStore({ redis: privateRedis.url, prefix: randomPrefix(), deleteOnClose: true, time: 'caller' });
      try {
        await store.configure([pool]);
        const before = await evalshaCalls();
        const requests = Array.from({ length: 10 }, () => ({ poolId: 'p', keyIds: ['a', 'b'] }));
        const decisions = await store.acquire(requests, T0);
        assert.equal(decisions.filter((d) => d.granted).length, 10);
        assert.equal(await evalshaCalls(), before + 1);
        const leases = await store.lease(
          Array.from({ length: 5 }, () => ({ poolId: 'p', keyIds: ['a', 'b'], wantedSlots: 4 })),
          T0 + 5000,
          0,
        );
        assert.equal(leases.length, 5);
        assert.equal(await evalshaCalls(), before + 2);
      } finally {
        await store.close();
      }
    });

    it('reloads its scripts when Redis has forgotten them', async () => {
      const store = new RedisLimiterStore({ redis: privateRedis.url, prefix: randomPrefix(), deleteOnClose: true, time: 'caller' });
      try {
        await store.configure([pool]);
        assert.deepEqual(await store.acquire([{ poolId: 'p', keyIds: ['a'] }], T0), [{ granted: true, keyId: 'a', admissionId: '' }]);
        await admin.script('FLUSH');
        assert.deepEqual(await store.acquire([{ poolId: 'p', keyIds: ['a'] }], T0), [{ granted: true, keyId: 'a', admissionId: '' }]);
        await admin.script('FLUSH');
        // A batch spanning pools goes as a pipeline; it recovers the same way.
        assert.deepEqual(
          await store.acquire([{ poolId: 'p', keyIds: ['a'] }, { poolId: 'q', keyIds: ['a'] }], T0),
          [{ granted: true, keyId: 'a', admissionId: '' }, { granted: false, retryAfterMs: undefined }],
        );
        assert.equal((await store.snapshot('p', T0))[0]!.windows[0]!.remaining, 0);
      } finally {
        await store.close();
      }
    });

    it('keeps every key under its prefix in its pool\'s hash slot, bounds and expires idle logs, and deletes only its own keys', async () => {
      const prefix = randomPrefix();
      const store = new RedisLimiterStore({ redis: privateRedis.url, prefix, deleteOnClose: true, time: 'caller' });
      await admin.set('someone-else:limiter:{p}:cfg', 'untouched');
      await admin.set(`${prefix}x:limiter:pools`, 'untouched');
      await store.configure([pool]);
      await store.acquire([{ poolId: 'p', keyIds: ['a'] }, { poolId: 'p', keyIds: ['b'] }], T0);
      const keys = (await admin.keys(`${prefix}:*`)).sort();
      assert.deepEqual(keys, [
        `${prefix}:limiter:pools`,
        `${prefix}:limiter:{p}:cfg`,
        `${prefix}:limiter:{p}:log:a`,
        `${prefix}:limiter:{p}:seq`,
        `${prefix}:limiter:{p}:st:a`,
        `${prefix}:limiter:{p}:st:b`,
      ]);
      // A log holds the newest max(requests) admissions, like the memory store's rings: bounded memory.
      for (let i = 1; i <= 5; i++) await store.acquire([{ poolId: 'p', keyIds: ['a'] }], T0 + i * 1000);
      assert.equal(await admin.zcard(`${prefix}:limiter:{p}:log:a`), 3);
      // The log expires a while after its window; the condition hash never (a park must last).
      const ttlMs = await admin.pttl(`${prefix}:limiter:{p}:log:a`);
      assert.ok(ttlMs > 1000 && ttlMs <= 61_000, `ttl ${ttlMs}`);
      assert.equal(await admin.pttl(`${prefix}:limiter:{p}:st:a`), -1);
      await store.close();
      assert.deepEqual(await admin.keys(`${prefix}:*`), []);
      assert.equal(await admin.get('someone-else:limiter:{p}:cfg'), 'untouched');
      assert.equal(await admin.get(`${prefix}x:limiter:pools`), 'untouched');
    });

    it('leaves the shared state in place when a replica closes', async () => {
      const prefix = randomPrefix();
      const first = new RedisLimiterStore({ redis: privateRedis.url, prefix, time: 'caller' });
      await first.configure([pool]);
      await first.acquire([{ poolId: 'p', keyIds: ['a'] }], T0);
      await first.close();
      const second = new RedisLimiterStore({ redis: privateRedis.url, prefix, deleteOnClose: true, time: 'caller' });
      try {
        const [state] = await second.snapshot('p', T0);
        assert.equal(state!.windows[0]!.remaining, 2);
      } finally {
        await second.close();
      }
    });
  });
});

describe('the limiter\'s Redis connection', () => {
  it('never runs a script twice when the connection drops before its answer (a settle would refund twice)', async () => {
    const server = await redisForTests();
    const target = new URL(server.url);
    const settleSha = createHash('sha1').update(SETTLE_LUA).digest('hex');
    let loseNextSettleAnswer = false;
    let settlesSent = 0;
    // Between the limiter and Redis: forwards everything, except that it can lose one settle's answer with its connection.
    const proxy = createServer((downstream) => {
      const upstream = connect(Number(target.port), target.hostname);
      let dropping = false;
      downstream.on('data', (data) => {
        if (data.includes(settleSha)) {
          settlesSent++;
          if (loseNextSettleAnswer) [loseNextSettleAnswer, dropping] = [false, true];
        }
        upstream.write(data);
      });
      upstream.on('data', (data) => {
        if (!dropping) downstream.write(data);
        else {
          downstream.destroy();
          upstream.destroy();
        }
      });
      for (const socket of [downstream, upstream]) socket.on('error', () => undefined);
      downstream.on('close', () => upstream.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const client = new Redis(`redis://127.0.0.1:${(proxy.address() as AddressInfo).port}`, LIMITER_REDIS_OPTIONS);
    client.on('error', () => undefined);
    await new Promise((resolve) => client.once('ready', resolve));
    const store = new RedisLimiterStore({ redis: client, prefix: randomPrefix(), deleteOnClose: true, time: 'caller' });
    try {
      await store.configure([{ poolId: 'p', keys: [{ keyId: 'k', limits: [], tokenLimits: [{ tokens: 10_000, perMs: 60_000 }] }] }]);
      const nowMs = Date.now();
      const [acquired] = await store.acquire([{ poolId: 'p', keyIds: ['k'], tokens: 5_000 }], nowMs);
      assert.ok(acquired!.granted);
      loseNextSettleAnswer = true;
      const settle = store.settle([{ poolId: 'p', keyId: 'k', admissionId: acquired!.admissionId!, reservedTokens: 5_000, usedTokens: 3_000 }], nowMs);
      await settle.catch(() => undefined);
      await waitFor(() => client.status === 'ready' || undefined, { timeoutMs: 5_000, what: 'the client to reconnect' });
      await new Promise((resolve) => setTimeout(resolve, 200));
      const [state] = await store.snapshot('p', nowMs);
      assert.equal(settlesSent, 1, 'the settle went to Redis once');
      assert.equal(state!.tokenWindows[0]!.remaining, 7_000, '10,000 less the 3,000 used, refunded once');
    } finally {
      await store.close();
      client.disconnect();
      proxy.close();
      await server.stop();
    }
  });
});
