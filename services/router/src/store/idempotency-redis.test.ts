import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import Redis from 'ioredis';
import type { Logger } from '@keymesh/telemetry';
import { redisForTests, startPrivateRedis, type ExternalServer, type PrivateServer } from '@keymesh/testing';
import { describeIdempotencyStore, first, never, OK, TTL_MS } from '../guards/idempotency.behaviour';
import { RedisIdempotencyStore } from './idempotency-redis';

/** A fresh namespace per store: tests share a Redis with others and never flush it. */
const prefixes: string[] = [];
function randomPrefix(): string {
  const prefix = `test-${randomBytes(6).toString('hex')}`;
  prefixes.push(prefix);
  return prefix;
}

class RecordingLogger implements Logger {
  readonly lines: { level: string; message: string; fields: Record<string, unknown> | undefined }[] = [];
  debug(message: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'debug', message, fields });
  }
  info(message: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'info', message, fields });
  }
  warn(message: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'warn', message, fields });
  }
  error(message: string, fields?: Record<string, unknown>): void {
    this.lines.push({ level: 'error', message, fields });
  }
}

describe('RedisIdempotencyStore', () => {
  let server: ExternalServer | undefined;
  let client: Redis | undefined;

  async function sharedClient(): Promise<Redis> {
    server ??= await redisForTests();
    client ??= new Redis(server.url);
    return client;
  }

  after(async () => {
    // Only this run's namespaces: pending markers would otherwise linger for their ttl.
    for (const prefix of prefixes) {
      const keys = (await client?.keys(`${prefix}:*`)) ?? [];
      if (keys.length > 0) await client?.del(...keys);
    }
    await client?.quit();
    await server?.stop();
  });

  // Two stores on one prefix are two router replicas.
  describeIdempotencyStore('redis', async () => {
    const prefix = randomPrefix();
    const redis = await sharedClient();
    const logger = new RecordingLogger();
    return { store: new RedisIdempotencyStore({ redis, prefix, logger }), twin: new RedisIdempotencyStore({ redis, prefix, logger }) };
  });

  it('stores only a hash of the tenant and key, with the ttl asked for', async () => {
    const redis = await sharedClient();
    const prefix = randomPrefix();
    const store = new RedisIdempotencyStore({ redis, prefix, logger: new RecordingLogger() });
    first(await store.claim('tenant-a\0order-secret-42', 'h', TTL_MS, never)).complete(OK);
    const keys = await waitForKeys(redis, `${prefix}:*`);
    assert.equal(keys.length, 1);
    assert.match(keys[0]!, new RegExp(`^${prefix}:idempotency:[0-9a-f]{64}$`));
    assert.ok(!keys[0]!.includes('order-secret-42') && !keys[0]!.includes('tenant-a'));
    await waitForReplay(store, 'tenant-a\0order-secret-42');
    const ttl = await redis.pttl(keys[0]!);
    assert.ok(ttl > TTL_MS - 5_000 && ttl <= TTL_MS, `pttl ${ttl}`);
    await redis.del(keys[0]!);
  });

  it('lets another replica take over once a dead replica’s pending marker expires', async () => {
    const redis = await sharedClient();
    const prefix = randomPrefix();
    const dead = new RedisIdempotencyStore({ redis, prefix, logger: new RecordingLogger(), pendingTtlMs: 100 });
    const live = new RedisIdempotencyStore({ redis, prefix, logger: new RecordingLogger(), pendingTtlMs: 100 });
    first(await dead.claim('k', 'h', TTL_MS, never)); // never completed: its replica died
    first(await live.claim('k', 'h', TTL_MS, never)).complete(undefined);
  });

  describe('with Redis down', () => {
    let privateRedis: PrivateServer | undefined;
    after(async () => {
      await privateRedis?.stop();
    });

    it('fails open: runs every request without deduplication, and logs the outage once', async () => {
      privateRedis = await startPrivateRedis();
      const logger = new RecordingLogger();
      const store = new RedisIdempotencyStore({ redis: privateRedis.url, prefix: randomPrefix(), logger });
      try {
        first(await store.claim('k', 'h', TTL_MS, never)).complete(OK);
        await waitForReplay(store, 'k');
        await privateRedis.kill();
        const startedMs = Date.now();
        for (let i = 0; i < 3; i++) first(await store.claim('k', 'h', TTL_MS, never)).complete(OK);
        assert.ok(Date.now() - startedMs < 1_000, `an outage cost ${Date.now() - startedMs} ms`);
        const warnings = logger.lines.filter((l) => l.level === 'warn');
        assert.equal(warnings.length, 1);
        assert.match(warnings[0]!.message, /unreachable/);
      } finally {
        await store.close();
      }
    });
  });
});

async function waitForKeys(redis: Redis, pattern: string): Promise<string[]> {
  for (;;) {
    const keys = await redis.keys(pattern);
    if (keys.length > 0) return keys;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function waitForReplay(store: RedisIdempotencyStore, key: string): Promise<void> {
  assert.equal((await store.claim(key, 'h', TTL_MS, never)).kind, 'replay');
}
