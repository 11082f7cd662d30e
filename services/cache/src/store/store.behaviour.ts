import assert from 'node:assert/strict';
import type { FakeClock } from '@keymesh/clock';
import type { CacheStore } from './store';

const T0 = 1_700_000_000_000;
const MINUTE_MS = 60_000;

function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function text(value: Uint8Array | undefined): string | undefined {
  return value === undefined ? undefined : new TextDecoder().decode(value);
}

/**
 * The behaviour every CacheStore must show, run by memory.test.ts (and a Redis
 * store's test alike). `makeStore` gets the byte budget to enforce. Time moves
 * only through `clock`.
 */
export function describeCacheStore(name: string, makeStore: (maxBytes: number) => Promise<CacheStore>, clock: FakeClock): void {
  describe(`CacheStore: ${name}`, () => {
    const maxBytes = 64 * 1024;
    let store: CacheStore;

    beforeEach(async () => {
      clock.set(T0);
      store = await makeStore(maxBytes);
    });

    afterEach(async () => {
      await store.close();
    });

    it('returns what was stored, with when it was stored', async () => {
      assert.equal(await store.set('tenant-a', 'k1', bytes('answer'), MINUTE_MS, clock.nowMs()), true);
      clock.advance(1_500);
      const entry = await store.get('tenant-a', 'k1', clock.nowMs());
      assert.equal(text(entry?.value), 'answer');
      assert.equal(entry?.storedAtMs, T0);
      assert.equal(entry?.expiresAtMs, T0 + MINUTE_MS);
    });

    it('misses a key that was never stored', async () => {
      assert.equal(await store.get('tenant-a', 'nope', clock.nowMs()), undefined);
    });

    it("keeps tenants apart: the same key in another tenant's namespace misses", async () => {
      await store.set('tenant-a', 'k1', bytes('for a'), MINUTE_MS, clock.nowMs());
      assert.equal(await store.get('tenant-b', 'k1', clock.nowMs()), undefined);
      await store.set('tenant-b', 'k1', bytes('for b'), MINUTE_MS, clock.nowMs());
      assert.equal(text((await store.get('tenant-a', 'k1', clock.nowMs()))?.value), 'for a');
      assert.equal(text((await store.get('tenant-b', 'k1', clock.nowMs()))?.value), 'for b');
    });

    it('never confuses where the namespace ends and the key begins', async () => {
      await store.set('ab', 'c', bytes('ab/c'), MINUTE_MS, clock.nowMs());
      assert.equal(await store.get('a', 'bc', clock.nowMs()), undefined);
    });

    it('serves an entry until its TTL passes, then misses', async () => {
      await store.set('tenant-a', 'k1', bytes('answer'), 10_000, clock.nowMs());
      clock.advance(9_999);
      assert.ok(await store.get('tenant-a', 'k1', clock.nowMs()));
      clock.advance(1);
      assert.equal(await store.get('tenant-a', 'k1', clock.nowMs()), undefined);
      clock.set(T0);
      assert.equal(await store.get('tenant-a', 'k1', clock.nowMs()), undefined, 'an expired entry is gone, not hidden');
    });

    it('replaces an entry and restarts its TTL', async () => {
      await store.set('tenant-a', 'k1', bytes('old'), 10_000, clock.nowMs());
      clock.advance(8_000);
      await store.set('tenant-a', 'k1', bytes('new'), 10_000, clock.nowMs());
      clock.advance(8_000);
      const entry = await store.get('tenant-a', 'k1', clock.nowMs());
      assert.equal(text(entry?.value), 'new');
      assert.equal(entry?.storedAtMs, T0 + 8_000);
    });

    it('refuses an entry larger than 1/8 of the budget and keeps the one it had', async () => {
      await store.set('tenant-a', 'k1', bytes('small'), MINUTE_MS, clock.nowMs());
      assert.equal(await store.set('tenant-a', 'k1', new Uint8Array(maxBytes / 8 + 1), MINUTE_MS, clock.nowMs()), false);
      assert.equal(text((await store.get('tenant-a', 'k1', clock.nowMs()))?.value), 'small');
      assert.equal(await store.set('tenant-a', 'k2', new Uint8Array(maxBytes / 16), MINUTE_MS, clock.nowMs()), true);
    });

    it('keeps its own copy of the stored bytes, from a Uint8Array or a Buffer view', async () => {
      const value = bytes('answer');
      const pooled = Buffer.from('other answer');
      await store.set('tenant-a', 'k1', value, MINUTE_MS, clock.nowMs());
      await store.set('tenant-a', 'k2', pooled.subarray(0, 5), MINUTE_MS, clock.nowMs());
      value.fill(0);
      pooled.fill(0);
      assert.equal(text((await store.get('tenant-a', 'k1', clock.nowMs()))?.value), 'answer');
      assert.equal(text((await store.get('tenant-a', 'k2', clock.nowMs()))?.value), 'other');
    });
  });
}
