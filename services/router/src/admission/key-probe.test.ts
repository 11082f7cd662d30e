import assert from 'node:assert/strict';
import type { LimitSnapshot } from '../providers';
import { KeyProbes, type GateAnswer } from './key-probe';

const NOW = 1_700_000_000_000;

function snapshot(remainingRequests: number | undefined, resetInMs = 1_000): LimitSnapshot {
  return {
    limitRequests: 5, remainingRequests, limitTokens: undefined, remainingTokens: undefined,
    requestsResetAtMs: NOW + resetInMs, tokensResetAtMs: undefined, inputTokens: undefined, outputTokens: undefined, retryAfterMs: undefined,
  };
}

function waiting(gate: ReturnType<KeyProbes['gate']>): Promise<GateAnswer> {
  assert.ok(typeof gate !== 'string', `expected to wait, got ${String(gate)}`);
  return gate;
}

describe('KeyProbes', () => {
  it('sends one request to an unknown key, then as many waiters as its answer said remain, and tells the limiter the rest', async () => {
    const probes = new KeyProbes();
    assert.equal(probes.gate('p', 'k'), 'probe');
    const waiters = [1, 2, 3].map(() => waiting(probes.gate('p', 'k', () => NOW)));
    const taught = probes.settle('p', 'k', snapshot(2), true);
    assert.equal(taught?.remainingRequests, 0, 'both remaining requests go to waiters');
    assert.deepEqual(await Promise.all(waiters), [{ kind: 'go' }, { kind: 'go' }, { kind: 'full', retryAfterMs: 1_000 }]);
  });

  it('makes newcomers ask the limiter again between the answer and the limiter hearing it, then lets everyone through', async () => {
    const probes = new KeyProbes();
    assert.equal(probes.gate('p', 'k'), 'probe');
    probes.settle('p', 'k', snapshot(4), true);
    const newcomer = waiting(probes.gate('p', 'k'));
    probes.confirm('p', 'k');
    assert.deepEqual(await newcomer, { kind: 'readmit' });
    assert.equal(probes.gate('p', 'k'), 'go');
  });

  it('hands the probe to the next waiter when the first got no answer', async () => {
    const probes = new KeyProbes();
    assert.equal(probes.gate('p', 'k'), 'probe');
    const next = waiting(probes.gate('p', 'k'));
    const after = waiting(probes.gate('p', 'k'));
    probes.settle('p', 'k', undefined, false);
    assert.deepEqual(await next, { kind: 'probe' }, 'the next waiter probes, and must settle the probe as the first would have');
    // The third now waits on the new probe.
    let settled = false;
    void after.then(() => (settled = true));
    await Promise.resolve();
    await Promise.resolve();
    assert.equal(settled, false);
    probes.settle('p', 'k', snapshot(undefined), true);
    assert.deepEqual(await after, { kind: 'go' }, 'an answer without a count lets waiters go');
  });

  it('never gates a key whose limits the config declares', () => {
    const probes = new KeyProbes();
    probes.reset((_poolId, keyId) => keyId === 'declared');
    assert.equal(probes.gate('p', 'declared'), 'go');
    assert.equal(probes.gate('p', 'declared'), 'go');
    assert.equal(probes.gate('p', 'other'), 'probe');
  });
});
