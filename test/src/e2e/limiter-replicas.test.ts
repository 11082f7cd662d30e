import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Redis from 'ioredis';
import { AcquireOutcome, LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { closeRpcClient, createRpcClient, type RpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { natsForTests, redisForTests, servingAddress, spawnNode, type ChildHandle, type ExternalServer } from '@keymesh/testing';

const KEYMESH_BIN = resolve(__dirname, '../../../services/cli/bin/keymesh.js');
const LIMIT = 20;
const WINDOW_MS = 2_000;

const config = `
providers:
  unused: { kind: openai, base_url: http://127.0.0.1:9/v1 }
pools:
  main:
    provider: unused
    keys:
      - { id: k1, secret: replica-test-1, limits: { requests: ${LIMIT}, per: 2s } }
      - { id: k2, secret: replica-test-2, limits: { requests: ${LIMIT}, per: 2s } }
routes:
  r: { targets: [ { pool: main, model: m } ] }
tenants:
  t: { virtual_keys: [ sk-keymesh-replicas ] }
`;

/** The most grants of one key inside any interval of `spanMs` (a sliding window over sorted times). */
/** A grant's decision happened somewhere between its call's start and its answer. */
interface GrantSpan {
  sentMs: number;
  answeredMs: number;
}

/**
 * The most grants whose decisions certainly lie within one window: those sent
 * no earlier than some grant was and answered less than a window after. Exact
 * under any client latency — a slow answer can only hide an over-admission,
 * never invent one.
 */
function mostCertainlyWithinOneWindow(grants: readonly GrantSpan[], windowMs: number): number {
  let most = 0;
  for (const anchor of grants) {
    const within = grants.filter((g) => g.sentMs >= anchor.sentMs && g.answeredMs < anchor.sentMs + windowMs).length;
    most = Math.max(most, within);
  }
  return most;
}

describe('three limiter processes on one Redis', function () {
  this.timeout(90_000);
  const children: ChildHandle[] = [];
  const clients: RpcClient<typeof LimiterService>[] = [];
  let nats: ExternalServer;
  let redis: ExternalServer;
  let dir: string;
  const prefix = `keymesh-replicas-${randomBytes(6).toString('hex')}`;

  before(async function () {
    nats = await natsForTests();
    redis = await redisForTests();
    dir = await mkdtemp(join(tmpdir(), 'keymesh-replicas-'));
    const configPath = join(dir, 'keymesh.yaml');
    await writeFile(configPath, config);
    const env: Record<string, string> = {
      NATS_URL: nats.url,
      REDIS_URL: redis.url,
      KEYMESH_REDIS_PREFIX: prefix,
      KEYMESH_MASTER_KEY: randomBytes(32).toString('base64'),
      KEYMESH_LOG_LEVEL: 'warn',
    };
    const control = spawnNode(KEYMESH_BIN, ['serve', 'control', '--port', '0', '--config', configPath], { env });
    children.push(control);
    env.KEYMESH_CONTROL_ADDR = await servingAddress(control, 'control');
    for (let i = 0; i < 3; i++) {
      const limiter = spawnNode(KEYMESH_BIN, ['serve', 'limiter', '--port', '0'], { env });
      children.push(limiter);
      clients.push(createRpcClient(LimiterService, await servingAddress(limiter, 'limiter'), { telemetry: createTelemetry('replica-test'), defaultTimeoutMs: 5_000 }));
    }
  });

  after(async function () {
    for (const client of clients) closeRpcClient(client);
    await Promise.all(children.map((c) => c.stop('SIGTERM', 5_000)));
    const cleanup = new Redis(redis.url);
    for await (const keys of cleanup.scanStream({ match: `${prefix}:*`, count: 500 }) as AsyncIterable<string[]>) if (keys.length > 0) await cleanup.del(...keys);
    cleanup.disconnect();
    await redis.stop();
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('never admits more than a key\'s limit in any window, whichever replica decides', async function () {
    const grants: Record<string, GrantSpan[]> = { k1: [], k2: [] };
    let calls = 0;
    const until = Date.now() + 3 * WINDOW_MS;
    await Promise.all(
      Array.from({ length: 24 }, async (_, worker) => {
        while (Date.now() < until) {
          const client = clients[(worker + calls++) % clients.length];
          const sentMs = Date.now();
          const response = await client.acquireBatch({ requests: [{ poolId: 'main' }, { poolId: 'main' }] });
          const answeredMs = Date.now();
          for (const r of response.responses) if (r.outcome === AcquireOutcome.GRANTED) grants[r.keyId].push({ sentMs, answeredMs });
          await new Promise((r) => setImmediate(r));
        }
      }),
    );
    assert.ok(calls > 500, `only ${calls} calls`);
    for (const [keyId, spans] of Object.entries(grants)) {
      const most = mostCertainlyWithinOneWindow(spans, WINDOW_MS);
      assert.ok(most <= LIMIT, `${keyId}: ${most} grants within one window of ${WINDOW_MS} ms (limit ${LIMIT})`);
      assert.ok(spans.length >= 2 * LIMIT, `${keyId}: only ${spans.length} grants over three windows`);
    }
  });
});
