import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Redis from 'ioredis';
import { startMockProvider, type MockProvider } from '@keymesh/mock-provider';
import { LimiterService, type KeyState } from '@keymesh/proto/limiter/v1/limiter';
import { closeRpcClient, createRpcClient, type RpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { edgePort, redisForTests, spawnNode, waitFor, type ChildHandle, type ExternalServer } from '@keymesh/testing';

const KEYMESH_BIN = resolve(__dirname, '../../../services/cli/bin/keymesh.js');
const VIRTUAL_KEY = 'sk-keymesh-lease-replicas';

/** Pool main: two keys of 20 per 2 s (leases held 100 ms), for exactness under load. */
const LIMIT = 20;
const WINDOW_MS = 2_000;
/**
 * The mock enforces the same limit over a slightly shorter window: the router
 * admits a request a few ms before the mock sees it, and those few ms vary.
 * Any over-admission by keymesh still shows as a 429 from the mock.
 */
const MOCK_WINDOW_MS = WINDOW_MS - 200;
/** Pool slow: one key of 30 per 5 s, so leases are held 250 ms: long enough to kill a replica holding one. */
const SLOW_LIMIT = 30;
const SLOW_WINDOW_MS = 5_000;
const SLOW_HOLD_MS = 250;
/** Pool daily: a calendar quota only (leases held 1 s). */
const DAILY_LIMIT = 100_000;

const secrets = { k1: 'lease-replica-1', k2: 'lease-replica-2', k3: 'lease-replica-3', k4: 'lease-replica-4' } as const;

const configOf = (mockUrl: string): string => `
providers:
  mock: { kind: openai, base_url: ${mockUrl} }
pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: ${secrets.k1}, limits: { requests: ${LIMIT}, per: 2s } }
      - { id: k2, secret: ${secrets.k2}, limits: { requests: ${LIMIT}, per: 2s } }
  slow:
    provider: mock
    keys:
      - { id: k3, secret: ${secrets.k3}, limits: { requests: ${SLOW_LIMIT}, per: 5s } }
  daily:
    provider: mock
    keys:
      - { id: k4, secret: ${secrets.k4}, limits: { rpd: ${DAILY_LIMIT} } }
routes:
  # One round: a full pool answers 429 at once rather than wait out the window, so the load stays high.
  exact: { targets: [ { pool: main, model: gpt-4o-mini } ], retry: { attempts: 1 } }
  slow: { targets: [ { pool: slow, model: gpt-4o-mini } ] }
  daily: { targets: [ { pool: daily, model: gpt-4o-mini } ] }
tenants:
  t: { virtual_keys: [ ${VIRTUAL_KEY} ] }
`;

interface Replica {
  readonly child: ChildHandle;
  readonly httpPort: number;
  readonly limiter: RpcClient<typeof LimiterService>;
}

/** A lease as the Redis store recorded it (lua/lease-return.ts), while it counts anywhere. */
interface LeaseRecord {
  readonly grantMs: number;
  readonly stampMs: number;
  readonly slots: number;
}

async function ask(port: number, model: string): Promise<number> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
    });
    await response.arrayBuffer();
    return response.status;
  } catch {
    // A replica killed mid-request.
    return 0;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('capacity leases of three router replicas on one Redis', function () {
  this.timeout(180_000);
  let redis: ExternalServer;
  let mock: MockProvider;
  let dir: string;
  let inspect: Redis;
  const replicas: Replica[] = [];
  const prefix = `keymesh-leases-${randomBytes(6).toString('hex')}`;

  async function keyState(keyId: string, via: Replica = replicas[0]!): Promise<KeyState> {
    const { keys } = await via.limiter.getKeyState({});
    const state = keys.find((k) => k.keyId === keyId);
    assert.ok(state, `no state for ${keyId}`);
    return state;
  }

  async function leaseRecords(poolId: string): Promise<LeaseRecord[]> {
    const records: LeaseRecord[] = [];
    for await (const keys of inspect.scanStream({ match: `${prefix}:limiter:{${poolId}}:ls:*`, count: 500 }) as AsyncIterable<string[]>) {
      if (keys.length === 0) continue;
      for (const value of await inspect.mget(...keys)) {
        if (value === null) continue;
        const [grantMs, stampMs, , , slots] = value.split('|');
        records.push({ grantMs: Number(grantMs), stampMs: Number(stampMs), slots: Number(slots) });
      }
    }
    return records;
  }

  before(async function () {
    redis = await redisForTests();
    inspect = new Redis(redis.url);
    mock = await startMockProvider({
      keys: [
        { secret: secrets.k1, limits: [{ requests: LIMIT, perMs: MOCK_WINDOW_MS }] },
        { secret: secrets.k2, limits: [{ requests: LIMIT, perMs: MOCK_WINDOW_MS }] },
        { secret: secrets.k3, limits: [{ requests: SLOW_LIMIT, perMs: SLOW_WINDOW_MS - 200 }] },
        { secret: secrets.k4 },
      ],
    });
    dir = await mkdtemp(join(tmpdir(), 'keymesh-leases-'));
    const configPath = join(dir, 'keymesh.yaml');
    await writeFile(configPath, configOf(mock.url));
    for (let i = 0; i < 3; i++) {
      const child = spawnNode(KEYMESH_BIN, ['up', '--config', configPath], {
        env: {
          KEYMESH_HTTP_PORT: '0',
          KEYMESH_GRPC_PORT: '0',
          NATS_URL: undefined,
          REDIS_URL: redis.url,
          // A prefix of its own: the shared Redis may hold other deployments' limits.
          KEYMESH_REDIS_PREFIX: prefix,
          KEYMESH_LOG_LEVEL: 'warn',
        },
      });
      // Registered before it is up, so a failed start is still stopped.
      const limiterLine = child.waitForLine(/^\s*limiter\s+(127\.0\.0\.1:\d+)/, 60_000);
      const httpPort = await edgePort(child, 60_000).catch((err: unknown) => {
        void child.stop('SIGKILL', 1_000);
        throw err;
      });
      const limiter = createRpcClient(LimiterService, (await limiterLine)[1]!, { telemetry: createTelemetry('lease-replicas-test'), defaultTimeoutMs: 5_000 });
      replicas.push({ child, httpPort, limiter });
    }
  });

  after(async function () {
    for (const replica of replicas) closeRpcClient(replica.limiter);
    await Promise.all(replicas.map((r) => r.child.stop('SIGTERM', 5_000)));
    for await (const keys of inspect.scanStream({ match: `${prefix}:*`, count: 500 }) as AsyncIterable<string[]>) if (keys.length > 0) await inspect.del(...keys);
    inspect.disconnect();
    await mock?.close();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('never lets the provider see more than a key\'s limit in any window, and shrinks grants to single slots near it', async function () {
    const statuses = new Map<number, number>();
    const slotsSeen = new Map<string, number>();
    let requests = 0;
    const until = Date.now() + 4 * WINDOW_MS;
    // Every lease granted meanwhile, read from the store while it still counts.
    const sampling = (async () => {
      while (Date.now() < until) {
        for (const record of await leaseRecords('main')) slotsSeen.set(`${record.grantMs}|${record.stampMs}|${record.slots}`, record.slots);
        await sleep(200);
      }
    })();
    await Promise.all(
      Array.from({ length: 24 }, async (_, worker) => {
        for (let n = 0; Date.now() < until; n++) {
          const status = await ask(replicas[(worker + n) % replicas.length]!.httpPort, 'exact');
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
          requests++;
        }
      }),
    );
    await sampling;
    const served = mock.stats(secrets.k1).ok + mock.stats(secrets.k2).ok;
    const summary = `${requests} requests, statuses ${JSON.stringify(Object.fromEntries(statuses))}, ${served} served upstream`;
    assert.ok(requests >= 1_000, `only ${summary}`);
    for (const keyId of ['k1', 'k2'] as const) {
      assert.equal(mock.stats(secrets[keyId]).rateLimited, 0, `${keyId}: the mock saw more than ${LIMIT} in ${MOCK_WINDOW_MS} ms; ${summary}`);
    }
    // Four windows (and the one the first ends in) of two keys: pressed against the limit, not starved by wasted slices.
    assert.ok(served >= 2 * LIMIT * 4 * 0.75, `too little goodput: ${summary}`);
    assert.equal(statuses.get(200), served, summary);
    const slices = [...slotsSeen.values()];
    const single = slices.filter((s) => s === 1).length;
    assert.ok(slices.length > 0 && Math.max(...slices) <= LIMIT / 4, `slices ${JSON.stringify(slices)}`);
    assert.ok(single >= slices.length / 2, `near the limit slices should be single slots: ${JSON.stringify(slices)}`);
    console.log(`      ${summary}; ${slices.length} leases seen, ${single} of one slot, largest ${Math.max(...slices)}`);
  });

  it('loses at most the slice a killed replica held, until it leaves the window', async function () {
    const victim = replicas[2]!;
    await waitFor(async () => ((await keyState('k3')).remainingRequests === SLOW_LIMIT ? true : undefined), { timeoutMs: SLOW_WINDOW_MS + 5_000, what: 'k3 to be idle' });
    const servedBefore = mock.stats(secrets.k3).ok;
    // Steady demand on one replica only, so that it keeps a slice ahead of it.
    const inFlight: Promise<number>[] = [];
    for (let i = 0; i < 16; i++) {
      inFlight.push(ask(victim.httpPort, 'slow'));
      await sleep(25);
    }
    await Promise.all(inFlight);
    const killedAtMs = Date.now();
    await victim.child.stop('SIGKILL', 1_000);
    replicas.pop();
    closeRpcClient(victim.limiter);
    const served = mock.stats(secrets.k3).ok - servedBefore;
    const used = SLOW_LIMIT - (await keyState('k3')).remainingRequests;
    // Leases still within their hold when the replica died: the most it could have held.
    const held = (await leaseRecords('slow')).filter((r) => r.stampMs > killedAtMs - 50).reduce((sum, r) => sum + r.slots, 0);
    const lost = used - served;
    console.log(`      ${served} served by the killed replica, ${lost} leased slots lost with it (its live leases: ${held} slots)`);
    assert.ok(lost > 0, 'the replica held no unspent slot when it died: nothing was tested');
    assert.ok(lost <= held, `${lost} slots lost, more than the ${held} it held`);
    // Everything comes back once the slice's hold and the window have passed, and not before the hold.
    const recovered = await waitFor(async () => ((await keyState('k3')).remainingRequests === SLOW_LIMIT ? Date.now() : undefined), {
      timeoutMs: SLOW_HOLD_MS + SLOW_WINDOW_MS + 5_000,
      intervalMs: 50,
      what: 'k3 to recover its whole limit',
    });
    assert.ok(recovered - killedAtMs <= SLOW_HOLD_MS + SLOW_WINDOW_MS + 1_000, `recovered ${recovered - killedAtMs} ms after the kill`);
  });

  it('gives a calendar quota back the slots a replica leased and did not spend, when it stops and when its leases end', async function () {
    const [keeper, stopping] = replicas as [Replica, Replica];
    const quotaUsed = async () => Number((await keyState('k4', keeper)).calendarQuotas[0]!.used);
    // A steady stream leases ahead of demand (a hold's worth of it).
    for (let i = 0; i < 30; i++) {
      assert.equal(await ask(stopping.httpPort, 'daily'), 200);
      await sleep(10);
    }
    const leasedAhead = (await quotaUsed()) - mock.stats(secrets.k4).ok;
    assert.ok(leasedAhead > 0, 'the replica holds no unspent slot: nothing to give back');
    await stopping.child.stop('SIGTERM', 5_000);
    replicas.pop();
    closeRpcClient(stopping.limiter);
    assert.equal(await quotaUsed(), mock.stats(secrets.k4).ok, 'the stopped replica gave back every unspent slot');
    // The last replica's leases end unspent: given back without a shutdown.
    for (let i = 0; i < 30; i++) {
      assert.equal(await ask(keeper.httpPort, 'daily'), 200);
      await sleep(10);
    }
    await waitFor(async () => ((await quotaUsed()) === mock.stats(secrets.k4).ok ? true : undefined), { timeoutMs: 5_000, intervalMs: 100, what: 'the quota to count only what was served' });
    console.log(`      ${leasedAhead} slots leased ahead and given back at shutdown; used ${await quotaUsed()} == served ${mock.stats(secrets.k4).ok}`);
  });
});
