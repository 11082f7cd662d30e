import assert from 'node:assert/strict';
import { durationFromMs, durationMs } from '@bufbuild/protobuf/wkt';
import { Code, KeymeshError } from '@keymesh/errors';
import { CacheService } from '@keymesh/proto/cache/v1/cache';
import { closeRpcClient, createRpcClient, type RpcClient } from '@keymesh/rpc';
import { createTelemetry, type Logger } from '@keymesh/telemetry';
import { startCache, type RunningCache } from './server';
import { FakeClock } from '@keymesh/clock';

const telemetry = createTelemetry('cache-test');
const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
const answer = new TextEncoder().encode('{"choices":[]}');
const KEY = 'a'.repeat(64);

describe('CacheService over loopback gRPC', () => {
  const clock = new FakeClock();
  let cache: RunningCache;
  let client: RpcClient<typeof CacheService>;

  beforeEach(async () => {
    clock.set(1_700_000_000_000);
    cache = await startCache({ telemetry, host: '127.0.0.1', port: 0, maxBytes: 64 * 1024, clock, logger: quiet });
    client = createRpcClient(CacheService, `127.0.0.1:${cache.port}`, { telemetry, defaultTimeoutMs: 5_000 });
  });

  afterEach(async () => {
    closeRpcClient(client);
    await cache.stop();
  });

  it('answers a Lookup after a Store with the value and its age', async () => {
    const stored = await client.store({ namespace: 'tenant-a', key: KEY, value: answer, ttl: durationFromMs(60_000) });
    assert.equal(stored.stored, true);
    clock.advance(2_500);
    const found = await client.lookup({ namespace: 'tenant-a', key: KEY });
    assert.equal(found.hit, true);
    assert.deepEqual(new Uint8Array(found.value), answer);
    assert.ok(found.age);
    assert.equal(durationMs(found.age), 2_500);
  });

  it("misses in another tenant's namespace", async () => {
    await client.store({ namespace: 'tenant-a', key: KEY, value: answer, ttl: durationFromMs(60_000) });
    const found = await client.lookup({ namespace: 'tenant-b', key: KEY });
    assert.equal(found.hit, false);
    assert.equal(found.value.length, 0);
  });

  it('misses once the TTL from the Store has passed', async () => {
    await client.store({ namespace: 'tenant-a', key: KEY, value: answer, ttl: durationFromMs(30_000) });
    clock.advance(29_999);
    assert.equal((await client.lookup({ namespace: 'tenant-a', key: KEY })).hit, true);
    clock.advance(1);
    assert.equal((await client.lookup({ namespace: 'tenant-a', key: KEY })).hit, false);
  });

  it('answers stored=false for an entry over 1/8 of the budget', async () => {
    const big = new Uint8Array(64 * 1024 / 8 + 1);
    assert.equal((await client.store({ namespace: 'tenant-a', key: KEY, value: big, ttl: durationFromMs(60_000) })).stored, false);
    assert.equal((await client.lookup({ namespace: 'tenant-a', key: KEY })).hit, false);
  });

  it('rejects a Store without a TTL or a namespace as INVALID_ARGUMENT', async () => {
    const invalid = (err: unknown): boolean => err instanceof KeymeshError && err.code === Code.InvalidArgument;
    await assert.rejects(client.store({ namespace: 'tenant-a', key: KEY, value: answer }), invalid);
    await assert.rejects(client.store({ namespace: '', key: KEY, value: answer, ttl: durationFromMs(1_000) }), invalid);
    await assert.rejects(client.lookup({ namespace: '', key: KEY }), invalid);
  });
});
