import assert from 'node:assert/strict';
import { waitFor } from '@keymesh/testing';
import type { IdempotencyClaim, IdempotencyStore, StoredResponse } from './idempotency';

export const OK: StoredResponse = { status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"id":"first"}') };
export const TTL_MS = 60_000;
export const never: AbortSignal = new AbortController().signal;

export function first(claim: IdempotencyClaim): Extract<IdempotencyClaim, { kind: 'first' }> {
  assert.equal(claim.kind, 'first');
  return claim as Extract<IdempotencyClaim, { kind: 'first' }>;
}

/**
 * What every IdempotencyStore must do, run against the memory and the Redis
 * store alike. `makeStore` gives a fresh namespace each call; `twin` a second
 * store on the same namespace (another replica), or the same store where there
 * is only one.
 */
export function describeIdempotencyStore(name: string, makeStore: () => Promise<{ store: IdempotencyStore; twin: IdempotencyStore }>): void {
  describe(`IdempotencyStore behaviour: ${name}`, () => {
    let store: IdempotencyStore;
    let twin: IdempotencyStore;
    beforeEach(async () => {
      ({ store, twin } = await makeStore());
    });
    afterEach(async () => {
      await store.close();
      if (twin !== store) await twin.close();
    });

    it('replays a successful answer for the same key and body', async () => {
      first(await store.claim('t\0k', 'h1', TTL_MS, never)).complete(OK);
      await waitFor(async () => (await twin.claim('t\0k', 'h1', TTL_MS, never)).kind === 'replay', { timeoutMs: 2_000, what: 'the answer to be stored' });
      assert.deepEqual(await twin.claim('t\0k', 'h1', TTL_MS, never), { kind: 'replay', response: OK });
    });

    it('keeps keys of different tenants apart', async () => {
      first(await store.claim('t1\0k', 'h', TTL_MS, never)).complete(OK);
      first(await store.claim('t2\0k', 'h', TTL_MS, never));
    });

    it('answers mismatch for the same key with another body, done or in flight', async () => {
      const claim = first(await store.claim('k', 'h1', TTL_MS, never));
      assert.deepEqual(await twin.claim('k', 'h2', TTL_MS, never), { kind: 'mismatch' });
      claim.complete(OK);
      await waitFor(async () => (await twin.claim('k', 'h1', TTL_MS, never)).kind === 'replay', { timeoutMs: 2_000, what: 'the answer to be stored' });
      assert.deepEqual(await twin.claim('k', 'h2', TTL_MS, never), { kind: 'mismatch' });
    });

    it('makes a request with a key in flight wait for the first outcome', async () => {
      const claim = first(await store.claim('k', 'h', TTL_MS, never));
      let waited: IdempotencyClaim | undefined;
      const waiting = twin.claim('k', 'h', TTL_MS, never).then((c) => (waited = c));
      // Still waiting after the waiter has surely looked at least once.
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(waited, undefined);
      claim.complete(OK);
      await waiting;
      assert.deepEqual(waited, { kind: 'replay', response: OK });
    });

    it('remembers no failure: a waiter then runs the request itself', async () => {
      const claim = first(await store.claim('k', 'h', TTL_MS, never));
      const waiting = twin.claim('k', 'h', TTL_MS, never);
      claim.complete(undefined);
      first(await waiting).complete({ ...OK, status: 500 });
      await waitFor(async () => {
        const again = await store.claim('k', 'h', TTL_MS, never);
        if (again.kind === 'first') again.complete(undefined);
        return again.kind === 'first';
      }, { timeoutMs: 2_000, what: 'the 500 to be forgotten' });
    });

    it('stops waiting when the waiting caller goes away', async () => {
      first(await store.claim('k', 'h', TTL_MS, never));
      const controller = new AbortController();
      const waiting = twin.claim('k', 'h', TTL_MS, controller.signal);
      controller.abort(new Error('client left'));
      await assert.rejects(waiting, /client left/);
    });

    it('forgets an answer once its ttl has passed', async () => {
      first(await store.claim('k', 'h', 200, never)).complete(OK);
      await waitFor(async () => (await store.claim('k', 'h', 200, never)).kind === 'replay', { timeoutMs: 2_000, what: 'the answer to be stored' });
      await waitFor(async () => (await twin.claim('k', 'h', 200, never)).kind === 'first', { timeoutMs: 5_000, what: 'the answer to expire' });
    });
  });
}
