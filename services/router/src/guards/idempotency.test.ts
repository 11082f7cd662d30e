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

  it('keeps at most maxBytes of answers, evicting the least recently used, and never one larger than an eighth of it', async () => {
    const store = new MemoryIdempotencyStore({ maxBytes: 8_000 });
    const answer = (bytes: number) => ({ status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.alloc(bytes) });
    const headerBytes = 'content-type'.length + 'application/json'.length;
    for (const key of ['a', 'b', 'c', 'd', 'e']) first(await store.claim(key, 'h', TTL_MS, never)).complete(answer(1_000 - headerBytes));
    assert.equal(store.bytes, 5_000);
    assert.equal((await store.claim('a', 'h', TTL_MS, never)).kind, 'replay');
    for (const key of ['f', 'g', 'h', 'i']) first(await store.claim(key, 'h', TTL_MS, never)).complete(answer(1_000 - headerBytes));
    // Nine answers of 1,000 bytes against a budget of 8,000: the least recently used (b) went.
    assert.equal(store.bytes, 8_000);
    first(await store.claim('b', 'h', TTL_MS, never)).complete(undefined);
    assert.equal((await store.claim('a', 'h', TTL_MS, never)).kind, 'replay');

    first(await store.claim('big', 'h', TTL_MS, never)).complete(answer(1_001));
    first(await store.claim('big', 'h', TTL_MS, never)).complete(undefined);
    assert.equal(store.bytes, 8_000, 'an answer over an eighth of the budget is not kept');
  });

  it('makes room for answers by evicting answers, never a request still in flight', async () => {
    const store = new MemoryIdempotencyStore({ maxBytes: 8_000 });
    const answer = { status: 200, headers: {}, body: Buffer.alloc(1_000) };
    const slow = first(await store.claim('slow', 'h', TTL_MS, never));
    for (const key of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j']) first(await store.claim(key, 'h', TTL_MS, never)).complete(answer);
    // The slow request's retry still waits for it rather than call the provider a second time.
    const retry = store.claim('slow', 'h', TTL_MS, never);
    slow.complete(answer);
    assert.equal((await retry).kind, 'replay');
  });

  it('hashes bodies so that any byte changes the hash', () => {
    assert.equal(bodySha256(Buffer.from('{"a":1}')), bodySha256(Buffer.from('{"a":1}')));
    assert.notEqual(bodySha256(Buffer.from('{"a":1}')), bodySha256(Buffer.from('{"a":2}')));
  });
});
