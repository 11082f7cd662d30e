import assert from 'node:assert/strict';
import { MemoryIdempotencyStore, bodySha256 } from './idempotency';
import { describeIdempotencyStore, first, never, OK, TTL_MS } from './idempotency.behaviour';

class FakeClock {
  constructor(public ms = 1_700_000_000_000) {}
  nowMs(): number {
    return this.ms;
  }
}

describeIdempotencyStore('memory', async () => {
  const store = new MemoryIdempotencyStore();
  return { store, twin: store };
});

describe('MemoryIdempotencyStore', () => {
  it('forgets an answer once its ttl has passed', async () => {
    const clock = new FakeClock();
    const store = new MemoryIdempotencyStore({ clock });
    first(await store.claim('k', 'h', TTL_MS, never)).complete(OK);
    clock.ms += TTL_MS - 1;
    assert.equal((await store.claim('k', 'h', TTL_MS, never)).kind, 'replay');
    clock.ms += 1;
    first(await store.claim('k', 'h', TTL_MS, never));
  });

  it('keeps at most maxEntries, evicting the least recently used', async () => {
    const store = new MemoryIdempotencyStore({ maxEntries: 2 });
    first(await store.claim('a', 'h', TTL_MS, never)).complete(OK);
    first(await store.claim('b', 'h', TTL_MS, never)).complete(OK);
    assert.equal((await store.claim('a', 'h', TTL_MS, never)).kind, 'replay');
    first(await store.claim('c', 'h', TTL_MS, never)).complete(OK);
    assert.equal(store.size, 2);
    assert.equal((await store.claim('a', 'h', TTL_MS, never)).kind, 'replay');
    assert.equal((await store.claim('c', 'h', TTL_MS, never)).kind, 'replay');
    first(await store.claim('b', 'h', TTL_MS, never));
  });

  it('hashes bodies so that any byte changes the hash', () => {
    assert.equal(bodySha256(Buffer.from('{"a":1}')), bodySha256(Buffer.from('{"a":1}')));
    assert.notEqual(bodySha256(Buffer.from('{"a":1}')), bodySha256(Buffer.from('{"a":2}')));
  });
});
