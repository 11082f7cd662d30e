import assert from 'node:assert/strict';
import type { LimiterService, ReleaseRequest } from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import { createLogger } from '@keymesh/telemetry';
import { waitFor } from '@keymesh/testing';
import { HoldKeeper } from './hold-keeper';

function fakeLimiter(calls: ReleaseRequest[]): RpcClient<typeof LimiterService> {
  return {
    release: async (request: ReleaseRequest) => {
      calls.push(request);
      return { expiredRenewals: [] };
    },
  } as unknown as RpcClient<typeof LimiterService>;
}

const holdIds = (request: ReleaseRequest | undefined, field: 'releases' | 'renewals'): string[] => (request?.[field] ?? []).map((h) => h.holdId);

describe('HoldKeeper', () => {
  const logger = createLogger('hold-keeper-test');

  it('releases each hold exactly once, the releases of one turn in one call', async () => {
    const calls: ReleaseRequest[] = [];
    const released: string[][] = [];
    const keeper = new HoldKeeper(fakeLimiter(calls), logger, (poolIds) => released.push([...poolIds]));
    const signal = new AbortController().signal;
    const a = keeper.hold('p', 'k', '1', 30_000, signal)!;
    const b = keeper.hold('p', 'k', '2', 30_000, signal)!;
    keeper.release(a);
    keeper.release(a);
    keeper.release(b);
    assert.equal(calls.length, 0, 'nothing is sent before the turn ends');
    await keeper.drain();
    assert.equal(calls.length, 1);
    assert.deepEqual(holdIds(calls[0], 'releases'), ['1', '2']);
    assert.deepEqual(released, [['p']], 'waiters on the pool hear that its slots are back');
    keeper.release(b);
    await keeper.drain();
    assert.equal(calls.length, 1, 'a second release of the same hold sends nothing');
  });

  it('releases a hold when its request aborts, and gives back at once a grant that arrives after the abort', async () => {
    const calls: ReleaseRequest[] = [];
    const keeper = new HoldKeeper(fakeLimiter(calls), logger);
    const request = new AbortController();
    const slot = keeper.hold('p', 'k', '1', 30_000, request.signal)!;
    request.abort();
    assert.equal(keeper.size, 0);
    keeper.release(slot);
    assert.equal(keeper.hold('p', 'k', '2', 30_000, request.signal), undefined);
    await keeper.drain();
    assert.deepEqual(calls.flatMap((c) => holdIds(c, 'releases')), ['1', '2']);
  });

  it('renews the holds of requests still running before their TTL runs out, and stops once none is held', async () => {
    const calls: ReleaseRequest[] = [];
    const keeper = new HoldKeeper(fakeLimiter(calls), logger);
    const signal = new AbortController().signal;
    const ttlMs = 300;
    const startedMs = Date.now();
    const slot = keeper.hold('p', 'k', '1', ttlMs, signal)!;
    await waitFor(() => calls.some((c) => c.renewals.length > 0) || undefined, { timeoutMs: 2_000, what: 'a renewal' });
    assert.ok(Date.now() - startedMs < ttlMs, 'renewed before the TTL ran out');
    const renewedBefore = calls.filter((c) => c.renewals.length > 0).length;
    await waitFor(() => calls.filter((c) => c.renewals.length > 0).length > renewedBefore || undefined, { timeoutMs: 2_000, what: 'a second renewal' });
    keeper.release(slot);
    await keeper.drain();
    const sent = calls.length;
    await new Promise((resolve) => setTimeout(resolve, ttlMs));
    assert.equal(calls.length, sent, 'no renewals once nothing is held');
  });
});
