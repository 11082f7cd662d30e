import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import {
  AcquireOutcome,
  GrantLeasesResponseSchema,
  Priority,
  type AcquireBatchRequest,
  type GrantLeasesRequest,
  type GrantLeasesResponse,
  type LimiterService,
} from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { AcquireBatcher, type Admission } from './acquire-batcher';
import { LeaseAdmission } from './lease-admission';

/** A limiter that grants what the test says, and counts the calls. */
function fakeLimiter(grant: (request: GrantLeasesRequest) => GrantLeasesResponse) {
  const calls: GrantLeasesRequest[] = [];
  let release: (() => void) | undefined;
  let held = false;
  const client = {
    grantLeases: async (request: GrantLeasesRequest) => {
      calls.push(request);
      if (held) await new Promise<void>((resolve) => (release = resolve));
      return grant(request);
    },
  } as unknown as RpcClient<typeof LimiterService>;
  return {
    client,
    calls,
    hold: () => (held = true),
    release: () => {
      held = false;
      release?.();
    },
  };
}

const leases = (slotsByKey: Record<string, number>) =>
  create(GrantLeasesResponseSchema, {
    pools: [{ poolId: 'main', leases: Object.entries(slotsByKey).map(([keyId, slots]) => ({ keyId, slots })) }],
  });

const telemetry = createTelemetry('lease-admission-test');

function admissionWith(limiter: ReturnType<typeof fakeLimiter>, holdMs = 1_000): LeaseAdmission {
  return new LeaseAdmission(limiter.client, telemetry, new AcquireBatcher(limiter.client, telemetry), { holdMs });
}

const admit = (a: LeaseAdmission): Promise<Admission> => Promise.resolve(a.admit('main', [], 'r', Date.now() + 5_000, ROOT_CONTEXT));

describe('admission from capacity leases', () => {
  it('admits from a lease without calling the limiter per request', async () => {
    const limiter = fakeLimiter(() => leases({ k1: 100 }));
    const a = admissionWith(limiter);
    for (let i = 0; i < 50; i++) assert.deepEqual({ ...(await admit(a)), decidedBy: undefined }, { granted: true, keyId: 'k1', decidedBy: undefined });
    assert.equal(limiter.calls.length, 1);
  });

  it('asks for as many slots as requests are waiting, in one call per turn', async () => {
    const limiter = fakeLimiter((request) => leases({ k1: request.requests[0].wantedSlots }));
    const a = admissionWith(limiter);
    const admitted = await Promise.all(Array.from({ length: 7 }, () => admit(a)));
    assert.ok(admitted.every((x) => x.granted));
    assert.equal(limiter.calls.length, 1);
    assert.equal(limiter.calls[0].requests[0].wantedSlots, 7);
  });

  it('denies with the limiter\'s retry-after when nothing could be leased', async () => {
    const limiter = fakeLimiter(() =>
      create(GrantLeasesResponseSchema, { pools: [{ poolId: 'main', leases: [], reason: 'KEY_POOL_EXHAUSTED', retryAfter: { seconds: 2n, nanos: 500_000_000 } }] }),
    );
    const admission = await admit(admissionWith(limiter));
    assert.equal(admission.granted, false);
    assert.equal(!admission.granted && admission.retryAfterMs, 2_500);
  });

  it('never admits to a key the provider refused, even from a grant already in flight', async () => {
    // The second grant offers the refused key the most slots: only the refusal keeps it out.
    const limiter = fakeLimiter(() => (limiter.calls.length === 1 ? leases({ k1: 1, k2: 1 }) : leases({ k1: 1, k2: 5 })));
    const a = admissionWith(limiter);
    const first = await admit(a); // the first grant: one slot on each key
    assert.ok(first.granted);
    limiter.hold();
    const second = admit(a); // takes the other key's slot, and the pool is low: a refill is sent
    const refused = (await second) as Admission & { granted: true };
    a.forgetKey('main', refused.keyId, Number.POSITIVE_INFINITY);
    const pending = admit(a);
    limiter.release();
    const next = await pending;
    assert.ok(next.granted);
    assert.notEqual(next.keyId, refused.keyId);
  });

  it('spends no slot of a key from a grant asked for before its limit was learned, and asks again', async () => {
    // The grant in flight when k1's limit is learned offers only k1 (counted in no window); the next one is counted.
    const limiter = fakeLimiter(() => (limiter.calls.length === 1 ? leases({ k1: 5 }) : leases({ k1: 1, k2: 1 })));
    const a = admissionWith(limiter);
    limiter.hold();
    const pending = admit(a);
    await new Promise((resolve) => setImmediate(resolve)); // the first grant is sent
    a.limitLearned('main', 'k1');
    limiter.release();
    const admitted = await pending;
    assert.ok(admitted.granted);
    assert.equal(limiter.calls.length, 2);
    // The second grant was asked for after: its k1 slot counts.
    assert.deepEqual(new Set([admitted.keyId, ((await admit(a)) as Admission & { granted: true }).keyId]), new Set(['k1', 'k2']));
  });

  it('renews leases before they expire so requests do not wait for a grant', async () => {
    const limiter = fakeLimiter(() => leases({ k1: 1_000 }));
    const a = admissionWith(limiter, 300);
    await admit(a);
    let waited = 0;
    const until = Date.now() + 700;
    while (Date.now() < until) {
      // An admission that has to wait for a grant comes back as a promise.
      const admission = a.admit('main', [], 'r', Date.now() + 5_000, ROOT_CONTEXT);
      if (admission instanceof Promise) {
        waited++;
        await admission;
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // Slots were plenty; the leases were renewed before their 300 ms hold ran out.
    assert.equal(waited, 0);
    assert.ok(limiter.calls.length >= 2);
  });

  it('sends a high-priority request that finds no slot to the exact path with its priority, and never leases from the reserve', async () => {
    // The pool is at its reserve boundary: nothing to lease, but a high request may still be granted.
    const acquires: AcquireBatchRequest[] = [];
    const grants: GrantLeasesRequest[] = [];
    const client = {
      grantLeases: async (request: GrantLeasesRequest) => {
        grants.push(request);
        return create(GrantLeasesResponseSchema, { pools: [{ poolId: 'main', leases: [], reason: 'KEY_POOL_EXHAUSTED', retryAfter: { seconds: 1n } }] });
      },
      acquireBatch: async (request: AcquireBatchRequest) => {
        acquires.push(request);
        return {
          responses: request.requests.map((r) =>
            r.priority === Priority.HIGH ? { outcome: AcquireOutcome.GRANTED, keyId: 'k1', admissionId: '', holdId: '' } : { outcome: AcquireOutcome.DENIED, reason: 'KEY_POOL_EXHAUSTED' },
          ),
        };
      },
    } as unknown as RpcClient<typeof LimiterService>;
    const a = new LeaseAdmission(client, telemetry, new AcquireBatcher(client, telemetry), { holdMs: 1_000 });
    const normal = await Promise.resolve(a.admit('main', [], 'r1', Date.now() + 5_000, ROOT_CONTEXT));
    assert.equal(normal.granted, false);
    const high = await Promise.resolve(a.admit('main', [], 'r2', Date.now() + 5_000, ROOT_CONTEXT, undefined, true));
    assert.deepEqual({ ...high, decidedBy: undefined }, { granted: true, keyId: 'k1', decidedBy: undefined });
    assert.deepEqual(acquires.map((r) => r.requests.map((x) => x.priority)), [[Priority.HIGH]]);
    assert.ok(grants.length > 0 && grants.every((g) => g.requests.every((r) => r.priority !== Priority.HIGH)));
  });
});

describe('giving back a slot admitted from a lease', () => {
  it('returns it to the lease that granted it, which admits it again without a call', async () => {
    const limiter = fakeLimiter(() => leases({ k1: 1 }));
    const a = admissionWith(limiter);
    const first = await admit(a);
    assert.ok(first.granted);
    assert.equal(a.giveBack('main', first, 0), true);
    const again = await admit(a);
    assert.equal(again.granted && again.keyId, 'k1');
    assert.equal(again.decidedBy, first.decidedBy);
    assert.equal(limiter.calls.length, 1, 'the given-back slot served without another grant');
  });

  it('refuses a slot whose lease has ended, and one from another grant', async () => {
    const limiter = fakeLimiter(() => leases({ k1: 1 }));
    const a = admissionWith(limiter, 40);
    const first = await admit(a);
    assert.ok(first.granted);
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(a.giveBack('main', first, 0), false, 'the limiter counted it when the lease ended');
    const second = await admit(a);
    assert.ok(second.granted);
    assert.equal(a.giveBack('main', { ...second, decidedBy: first.decidedBy }, 0), false, 'not granted by a lease still held');
  });
});

describe('giving back unspent leases', () => {
  const leased = (keyId: string, slots: number, leaseId: string) =>
    create(GrantLeasesResponseSchema, { pools: [{ poolId: 'main', leases: [{ keyId, slots, leaseId }] }] });
  const returnsOf = (request: GrantLeasesRequest) => request.returns.map((r) => ({ poolId: r.poolId, keyId: r.keyId, leaseId: r.leaseId, slots: r.slots, tokens: r.tokens }));
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('sends the unspent slots of a dropped lease with the grant call that follows, not in a call of their own', async () => {
    const limiter = fakeLimiter(() => (limiter.calls.length === 1 ? leased('k1', 5, 'L1') : leased('k2', 5, 'L2')));
    const a = admissionWith(limiter);
    assert.ok((await admit(a)).granted);
    a.forgetKey('main', 'k1', Number.POSITIVE_INFINITY);
    const next = await admit(a);
    assert.ok(next.granted && next.keyId === 'k2');
    await sleep(100);
    assert.equal(limiter.calls.length, 2);
    assert.deepEqual(returnsOf(limiter.calls[1]!), [{ poolId: 'main', keyId: 'k1', leaseId: 'L1', slots: 4, tokens: 0 }]);
    assert.equal(limiter.calls[1]!.requests.length, 1);
  });

  it('gives back an idle pool\'s expired lease on its own, shortly after it expires', async () => {
    const limiter = fakeLimiter(() => leased('k1', 5, 'L1'));
    const a = admissionWith(limiter, 100);
    assert.ok((await admit(a)).granted);
    await sleep(250);
    assert.equal(limiter.calls.length, 2);
    assert.deepEqual(limiter.calls[1]!.requests, []);
    assert.deepEqual(returnsOf(limiter.calls[1]!), [{ poolId: 'main', keyId: 'k1', leaseId: 'L1', slots: 4, tokens: 0 }]);
  });

  it('gives back every lease it holds, and those of grants still on their way, when it closes', async () => {
    const limiter = fakeLimiter(() => (limiter.calls.length === 1 ? leased('k1', 5, 'L1') : leased('k2', 3, 'L2')));
    const a = new LeaseAdmission(limiter.client, telemetry, new AcquireBatcher(limiter.client, telemetry), {
      holdMs: (poolId) => (poolId === 'main' ? 1_000 : 2_000),
    });
    assert.ok((await admit(a)).granted);
    limiter.hold();
    const pending = Promise.resolve(a.admit('other', [], 'r', Date.now() + 5_000, ROOT_CONTEXT));
    await new Promise((resolve) => setImmediate(resolve));
    const closing = a.close();
    limiter.release();
    await pending;
    await closing;
    assert.equal(limiter.calls.length, 3);
    assert.deepEqual(returnsOf(limiter.calls[2]!).sort((x, y) => x.leaseId.localeCompare(y.leaseId)), [
      { poolId: 'main', keyId: 'k1', leaseId: 'L1', slots: 4, tokens: 0 },
      { poolId: 'other', keyId: 'k2', leaseId: 'L2', slots: 3, tokens: 0 },
    ]);
  });

  it('keeps slots counted once the provider\'s remaining count capped them', async () => {
    const limiter = fakeLimiter(() => leased('k1', 5, 'L1'));
    const a = admissionWith(limiter);
    assert.ok((await admit(a)).granted);
    a.capKey('main', 'k1', 2);
    await a.close();
    assert.equal(limiter.calls.length, 1);
  });

  it('puts back the returns of a call that failed, for the next one (the limiter frees each lease once)', async () => {
    let failing = false;
    const limiter = fakeLimiter(() => {
      if (failing) throw new Error('limiter down');
      return leased('k1', 5, `L${limiter.calls.length}`);
    });
    const a = admissionWith(limiter, 100);
    assert.ok((await admit(a)).granted);
    failing = true;
    await sleep(250);
    failing = false;
    await a.close();
    const sent = limiter.calls.slice(1).map(returnsOf);
    assert.ok(sent.length >= 2);
    assert.deepEqual(sent.at(-1), [{ poolId: 'main', keyId: 'k1', leaseId: 'L1', slots: 4, tokens: 0 }]);
  });
});
