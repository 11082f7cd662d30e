import assert from 'node:assert/strict';
import { MemoryIdempotencyStore, bodySha256, type IdempotencyClaim, type StoredResponse } from './idempotency';

class FakeClock {
  constructor(public ms = 1_700_000_000_000) {}
  nowMs(): number {
    return this.ms;
  }
}

const OK: StoredResponse = { status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"id":"first"}') };
const TTL_MS = 60_000;
const never = new AbortController().signal;

function first(claim: IdempotencyClaim): Extract<IdempotencyClaim, { kind: 'first' }> {
  assert.equal(claim.kind, 'first');
  return claim as Extract<IdempotencyClaim, { kind: 'first' }>;
}

describe('MemoryIdempotencyStore', () => {
  it('replays a successful answer for the same key and body', async () => {
    const store = new MemoryIdempotencyStore();
    first(await store.claim('t\0k', 'h1', TTL_MS, never)).complete(OK);
    const again = await store.claim('t\0k', 'h1', TTL_MS, never);
    assert.deepEqual(again, { kind: 'replay', response: OK });
  });

  it('answers mismatch for the same key with another body, done or in flight', async () => {
    const store = new MemoryIdempotencyStore();
    const claim = first(await store.claim('k', 'h1', TTL_MS, never));
    assert.deepEqual(await store.claim('k', 'h2', TTL_MS, never), { kind: 'mismatch' });
    claim.complete(OK);
    assert.deepEqual(await store.claim('k', 'h2', TTL_MS, never), { kind: 'mismatch' });
  });

  it('makes a request with a key in flight wait for the first outcome', async () => {
    const store = new MemoryIdempotencyStore();
    const claim = first(await store.claim('k', 'h', TTL_MS, never));
    let waited: IdempotencyClaim | undefined;
    const waiting = store.claim('k', 'h', TTL_MS, never).then((c) => (waited = c));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(waited, undefined);
    claim.complete(OK);
    await waiting;
    assert.deepEqual(waited, { kind: 'replay', response: OK });
  });

  it('remembers no failure: a waiter then runs the request itself', async () => {
    const store = new MemoryIdempotencyStore();
    const claim = first(await store.claim('k', 'h', TTL_MS, never));
    const waiting = store.claim('k', 'h', TTL_MS, never);
    claim.complete(undefined);
    first(await waiting).complete({ ...OK, status: 500 });
    first(await store.claim('k', 'h', TTL_MS, never));
  });

  it('stops waiting when the waiting caller goes away', async () => {
    const store = new MemoryIdempotencyStore();
    first(await store.claim('k', 'h', TTL_MS, never));
    const controller = new AbortController();
    const waiting = store.claim('k', 'h', TTL_MS, controller.signal);
    controller.abort(new Error('client left'));
    await assert.rejects(waiting, /client left/);
  });

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
