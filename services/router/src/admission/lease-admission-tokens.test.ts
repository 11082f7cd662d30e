import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import {
  AcquireBatchResponseSchema,
  AcquireOutcome,
  GrantLeasesResponseSchema,
  type AcquireBatchRequest,
  type GrantLeasesRequest,
  type LimiterService,
} from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { AcquireBatcher, type Admission } from './acquire-batcher';
import { LeaseAdmission } from './lease-admission';

const telemetry = createTelemetry('lease-admission-tokens-test');

/** A limiter that leases k1 with a 300-token budget and grants k2 by Acquire, recording every call. */
function fakeLimiter() {
  const grants: GrantLeasesRequest[] = [];
  const acquires: AcquireBatchRequest[] = [];
  let granted: Promise<unknown> = Promise.resolve();
  const client = {
    grantLeases: (request: GrantLeasesRequest) => {
      grants.push(request);
      granted = Promise.resolve(
        create(GrantLeasesResponseSchema, { pools: [{ poolId: 'main', leases: [{ keyId: 'k1', slots: 10, tokens: 300, admissionId: '7', leaseId: '7' }] }] }),
      );
      return granted;
    },
    acquireBatch: async (request: AcquireBatchRequest) => {
      acquires.push(request);
      return create(AcquireBatchResponseSchema, {
        responses: request.requests.map(() => ({ outcome: AcquireOutcome.GRANTED, keyId: 'k2', admissionId: '9' })),
      });
    },
  } as unknown as RpcClient<typeof LimiterService>;
  return { client, grants, acquires, granted: () => granted };
}

const withoutSpan = (admission: Admission) => ({ ...admission, decidedBy: undefined });

/**
 * A limiter with one key and `budget` tokens, as a quota near its end: a
 * lease carves all that is left the moment the limiter hears the call (its
 * answer is held until `answer`), and an Acquire is granted only from what
 * no lease holds.
 */
function carvingLimiter(budget: number) {
  let left = budget;
  let answer = (): void => undefined;
  const acquires: AcquireBatchRequest[] = [];
  const client = {
    grantLeases: () => {
      const tokens = left;
      left = 0;
      return new Promise((resolve) => {
        answer = () =>
          resolve(create(GrantLeasesResponseSchema, { pools: [{ poolId: 'main', leases: tokens > 0 ? [{ keyId: 'k1', slots: 10, tokens, admissionId: '7', leaseId: '7' }] : [] }] }));
      });
    },
    acquireBatch: async (request: AcquireBatchRequest) => {
      acquires.push(request);
      return create(AcquireBatchResponseSchema, {
        responses: request.requests.map((r) => {
          if (r.estimatedTokens > left) return { outcome: AcquireOutcome.DENIED, retryAfter: { seconds: 60n } };
          left -= r.estimatedTokens;
          return { outcome: AcquireOutcome.GRANTED, keyId: 'k1', admissionId: '9' };
        }),
      });
    },
  } as unknown as RpcClient<typeof LimiterService>;
  return { client, acquires, answer: () => answer() };
}

/**
 * Admission over a carvingLimiter(budget) once a first request of `firstTokens`
 * was answered by its Acquire and asked for a lease, which is still on its way.
 */
async function afterFirstRequest(budget: number, firstTokens: number) {
  const limiter = carvingLimiter(budget);
  const a = new LeaseAdmission(limiter.client, telemetry, new AcquireBatcher(limiter.client, telemetry), { holdMs: 1_000 });
  const admit = (tokens: number, deadlineInMs = 5_000): Promise<Admission> => Promise.resolve(a.admit('main', [], 'r', Date.now() + deadlineInMs, ROOT_CONTEXT, tokens));
  const first = await admit(firstTokens);
  await new Promise((resolve) => setImmediate(resolve));
  return { limiter, first, admit };
}

describe('admission from capacity leases with token budgets', () => {
  it('admits from a lease only while the estimate fits its budget, and otherwise reserves by a batched Acquire', async () => {
    const limiter = fakeLimiter();
    const a = new LeaseAdmission(limiter.client, telemetry, new AcquireBatcher(limiter.client, telemetry), { holdMs: 1_000 });
    const admit = (tokens: number) => Promise.resolve(a.admit('main', [], 'r', Date.now() + 5_000, ROOT_CONTEXT, tokens));

    // No lease yet: the request does not wait for one, it reserves its own tokens, and asks for a lease.
    assert.deepEqual(withoutSpan(await admit(100)), { granted: true, keyId: 'k2', admissionId: '9', decidedBy: undefined });
    assert.equal(limiter.acquires[0]!.requests[0]!.estimatedTokens, 100);
    await limiter.granted();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(limiter.grants.length, 1);
    assert.ok(limiter.grants[0]!.requests[0]!.wantedTokens >= 100, 'the lease should be sized by the tokens asked for');

    // 300 tokens of budget: three requests of 100, then the fourth no longer fits.
    for (let i = 0; i < 3; i++) assert.deepEqual(withoutSpan(await admit(100)), { granted: true, keyId: 'k1', admissionId: '7', decidedBy: undefined });
    assert.equal(limiter.acquires.length, 1);
    assert.deepEqual(withoutSpan(await admit(100)), { granted: true, keyId: 'k2', admissionId: '9', decidedBy: undefined });
    assert.equal(limiter.acquires.length, 2);
  });

  it('waits for a grant on its way rather than be denied the room that grant is bringing this router', async () => {
    // Too large for the whole budget: denied by its Acquire, and its demand asks for a lease, which takes all 36.
    const { limiter, first, admit } = await afterFirstRequest(36, 2_048);
    assert.equal(first.granted, false);
    // While that lease is on its way, a request that fits it waits for it instead of asking the limiter, which has nothing left.
    const fitting = admit(12);
    await new Promise((resolve) => setImmediate(resolve));
    limiter.answer();
    assert.deepEqual(withoutSpan(await fitting), { granted: true, keyId: 'k1', admissionId: '7', decidedBy: undefined });
    assert.equal(limiter.acquires.length, 1);
  });

  it('spends nothing for a request whose deadline passed while it waited for the grant', async () => {
    const { limiter, first, admit } = await afterFirstRequest(36, 2_048);
    assert.equal(first.granted, false);
    const late = admit(12, 20);
    await new Promise((resolve) => setTimeout(resolve, 40));
    limiter.answer();
    const answer = await late;
    assert.equal(answer.granted, false);
    assert.equal(!answer.granted && answer.reason, 'DEADLINE_EXCEEDED');
    // The whole budget is still there for the next request, and no Acquire was sent for the late one.
    assert.deepEqual(withoutSpan(await admit(36)), { granted: true, keyId: 'k1', admissionId: '7', decidedBy: undefined });
    assert.equal(limiter.acquires.length, 1);
  });

  it('does not wait for a grant that asked for less than the request needs', async () => {
    const { limiter, first, admit } = await afterFirstRequest(1_000_000, 100);
    assert.equal(first.granted, true);
    // The grant in flight asked for what 100 tokens of demand scale to; a request of 500,000 goes by Acquire at once.
    const big = await admit(500_000);
    assert.equal(big.granted, false, 'the carving limiter has leased everything to the grant in flight');
    assert.equal(limiter.acquires.length, 2);
    limiter.answer();
  });

  it('gives a dropped lease\'s unspent slots and budget back to its key with the next call', async () => {
    const limiter = fakeLimiter();
    const a = new LeaseAdmission(limiter.client, telemetry, new AcquireBatcher(limiter.client, telemetry), { holdMs: 1_000 });
    const admit = (tokens: number) => Promise.resolve(a.admit('main', [], 'r', Date.now() + 5_000, ROOT_CONTEXT, tokens));
    await admit(100);
    await limiter.granted();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal((await admit(120)).granted, true);
    const calls = limiter.grants.length;
    // The provider refused k1: its lease is dropped, and what was not spent of it goes back.
    a.forgetKey('main', 'k1', Number.POSITIVE_INFINITY);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const returns = limiter.grants.slice(calls).flatMap((g) => g.returns.map((r) => ({ poolId: r.poolId, keyId: r.keyId, leaseId: r.leaseId, slots: r.slots, tokens: r.tokens })));
    assert.deepEqual(returns, [{ poolId: 'main', keyId: 'k1', leaseId: '7', slots: 9, tokens: 180 }]);
  });
});
