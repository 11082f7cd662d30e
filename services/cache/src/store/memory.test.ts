import assert from 'node:assert/strict';
import { FakeClock } from '@keymesh/clock';
import { DEFAULT_MAX_BYTES, MemoryCacheStore } from './memory';
import { describeCacheStore } from './store.behaviour';

describeCacheStore('memory', async (maxBytes) => new MemoryCacheStore({ maxBytes }), new FakeClock());

describe('MemoryCacheStore', () => {
  const clock = new FakeClock();
  const kib = (n: number): Uint8Array => new Uint8Array(n * 1024);

  it('defaults to a 64 MiB budget', () => {
    assert.equal(new MemoryCacheStore().maxBytes, DEFAULT_MAX_BYTES);
    assert.equal(DEFAULT_MAX_BYTES, 64 * 1024 * 1024);
  });

  it('rejects a budget that is not a positive integer', () => {
    assert.throws(() => new MemoryCacheStore({ maxBytes: 0 }), RangeError);
    assert.throws(() => new MemoryCacheStore({ maxBytes: 1.5 }), RangeError);
  });

  it('evicts the least recently used entries to stay within its byte budget', async () => {
    const store = new MemoryCacheStore({ maxBytes: 80 * 1024 });
    for (const key of ['a', 'b', 'c', 'd', 'e', 'f', 'g']) assert.ok(await store.set('t', key, kib(9), 60_000, clock.nowMs()));
    assert.ok(await store.get('t', 'a', clock.nowMs()), 'touch a: now the most recently used');
    await store.set('t', 'h', kib(9), 60_000, clock.nowMs());
    await store.set('t', 'i', kib(9), 60_000, clock.nowMs());
    assert.ok(store.usedBytes <= store.maxBytes, `${store.usedBytes} > ${store.maxBytes}`);
    assert.equal(await store.get('t', 'b', clock.nowMs()), undefined, 'b was the least recently used');
    for (const key of ['a', 'h', 'i']) assert.ok(await store.get('t', key, clock.nowMs()), key);
  });

  it('gives back the bytes of an entry found expired', async () => {
    const store = new MemoryCacheStore({ maxBytes: 80 * 1024 });
    await store.set('t', 'k', kib(4), 1_000, clock.nowMs());
    assert.ok(store.usedBytes > 4 * 1024);
    assert.equal(await store.get('t', 'k', clock.nowMs() + 1_000), undefined);
    assert.equal(store.usedBytes, 0);
    assert.equal(store.size, 0);
  });

  it('charges a replaced entry once', async () => {
    const store = new MemoryCacheStore({ maxBytes: 80 * 1024 });
    await store.set('t', 'k', kib(4), 1_000, clock.nowMs());
    const once = store.usedBytes;
    await store.set('t', 'k', kib(4), 1_000, clock.nowMs());
    assert.equal(store.usedBytes, once);
    assert.equal(store.size, 1);
  });
});
