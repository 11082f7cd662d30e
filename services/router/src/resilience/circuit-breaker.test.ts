import assert from 'node:assert/strict';
import { BreakerBoard } from './breaker-board';
import { CircuitBreaker, DEFAULT_BREAKER_OPTIONS, Permit } from './circuit-breaker';

const T0 = 1_000_000;

/** Records `n` calls of one outcome through the breaker, as the dispatcher does. */
function record(breaker: CircuitBreaker, n: number, outcome: 'ok' | 'unavailable' | 'rate_limited' | 'unauthorized' | 'rejected', nowMs = T0): void {
  for (let i = 0; i < n; i++) {
    const permit = breaker.acquire(nowMs);
    assert.notEqual(permit, Permit.Denied, `call ${i} was refused`);
    if (outcome === 'ok') breaker.succeeded(permit, nowMs);
    else breaker.failed(permit, outcome, nowMs);
  }
}

describe('CircuitBreaker', () => {
  it('opens after five unavailable failures in a row and refuses calls until the open period ends', () => {
    const breaker = new CircuitBreaker('mock');
    record(breaker, 4, 'unavailable');
    assert.equal(breaker.state, 'closed');
    record(breaker, 1, 'unavailable', T0 + 10);
    assert.equal(breaker.state, 'open');
    assert.equal(breaker.reason, 'consecutive_failures');
    assert.equal(breaker.sinceMs, T0 + 10);
    assert.equal(breaker.acquire(T0 + 10 + 4_999), Permit.Denied);
    assert.equal(breaker.retryAfterMs(T0 + 10 + 4_000), 1_000);
  });

  it('counts failures in a row only: a success in between starts the count again', () => {
    const breaker = new CircuitBreaker('mock');
    record(breaker, 4, 'unavailable');
    record(breaker, 1, 'ok');
    record(breaker, 4, 'unavailable');
    assert.equal(breaker.state, 'closed');
  });

  it('opens when half of the last calls failed, once there were at least ten', () => {
    const breaker = new CircuitBreaker('mock');
    for (let i = 0; i < 4; i++) {
      record(breaker, 1, 'ok');
      record(breaker, 1, 'unavailable');
    }
    record(breaker, 1, 'ok');
    assert.equal(breaker.state, 'closed', '4 failures in 9 calls');
    record(breaker, 1, 'unavailable');
    assert.equal(breaker.state, 'open', '5 failures in 10 calls');
    assert.equal(breaker.reason, 'failure_rate');
  });

  it('judges the rate over the last twenty calls only', () => {
    const breaker = new CircuitBreaker('mock');
    record(breaker, 4, 'unavailable');
    record(breaker, 20, 'ok');
    // The early failures have left the window, which now holds only successes.
    record(breaker, 4, 'unavailable');
    record(breaker, 1, 'ok');
    for (let i = 0; i < 3; i++) {
      record(breaker, 1, 'unavailable');
      record(breaker, 1, 'ok');
    }
    assert.equal(breaker.state, 'closed', '7 failures in the last 20');
    record(breaker, 3, 'unavailable');
    // 10 of the last 20: over all 38 calls (14 failures) it would still be closed.
    assert.equal(breaker.state, 'open', '10 failures in the last 20');
    assert.equal(breaker.reason, 'failure_rate');
  });

  it('counts only unavailable failures: 429, 401 and rejected requests never open it', () => {
    const breaker = new CircuitBreaker('mock');
    record(breaker, 20, 'rate_limited');
    record(breaker, 20, 'unauthorized');
    record(breaker, 20, 'rejected');
    record(breaker, 4, 'unavailable');
    assert.equal(breaker.state, 'closed');
  });

  it('half-opens after the open period and lets a single probe through', () => {
    const breaker = new CircuitBreaker('mock');
    record(breaker, 5, 'unavailable');
    const later = T0 + DEFAULT_BREAKER_OPTIONS.openMs;
    assert.equal(breaker.blocks(later - 1), true);
    assert.equal(breaker.blocks(later), false);
    assert.equal(breaker.acquire(later), Permit.Probe);
    assert.equal(breaker.state, 'half_open');
    assert.equal(breaker.acquire(later + 1), Permit.Denied, 'a second concurrent probe');
    assert.equal(breaker.blocks(later + 1), true);
  });

  it('closes and forgets its failures when the probe succeeds', () => {
    const breaker = new CircuitBreaker('mock');
    record(breaker, 5, 'unavailable');
    const later = T0 + 5_000;
    const probe = breaker.acquire(later);
    breaker.succeeded(probe, later + 50);
    assert.equal(breaker.state, 'closed');
    assert.equal(breaker.sinceMs, later + 50);
    assert.equal(breaker.acquire(later + 51), Permit.Pass);
    record(breaker, 4, 'unavailable', later + 60);
    assert.equal(breaker.state, 'closed', 'the count starts afresh');
    // After closing, the next open lasts the base period again.
    record(breaker, 1, 'unavailable', later + 60);
    assert.equal(breaker.openUntilMs, later + 60 + 5_000);
  });

  it('re-opens for twice as long when the probe fails, up to sixty seconds', () => {
    const breaker = new CircuitBreaker('mock');
    record(breaker, 5, 'unavailable');
    let nowMs = T0;
    for (const expectedMs of [10_000, 20_000, 40_000, 60_000, 60_000]) {
      nowMs = breaker.openUntilMs;
      const probe = breaker.acquire(nowMs);
      assert.equal(probe, Permit.Probe);
      breaker.failed(probe, 'unavailable', nowMs);
      assert.equal(breaker.state, 'open');
      assert.equal(breaker.reason, 'probe_failed');
      assert.equal(breaker.openUntilMs - nowMs, expectedMs);
    }
  });

  it('gives the probe back when its outcome does not count, so another may try', () => {
    const breaker = new CircuitBreaker('mock');
    record(breaker, 5, 'unavailable');
    const later = T0 + 5_000;
    breaker.failed(breaker.acquire(later), 'rate_limited', later);
    assert.equal(breaker.state, 'half_open');
    const second = breaker.acquire(later);
    assert.equal(second, Permit.Probe);
    breaker.release(second);
    assert.equal(breaker.acquire(later), Permit.Probe);
  });

  it('ignores late outcomes of calls let through before it opened', () => {
    const breaker = new CircuitBreaker('mock');
    const early = breaker.acquire(T0);
    record(breaker, 5, 'unavailable');
    breaker.succeeded(early, T0 + 1);
    assert.equal(breaker.state, 'open');
    const probe = breaker.acquire(T0 + 5_000);
    breaker.failed(early, 'unavailable', T0 + 5_001);
    assert.equal(breaker.state, 'half_open', 'only the probe decides');
    breaker.succeeded(probe, T0 + 5_002);
    assert.equal(breaker.state, 'closed');
  });
});

describe('BreakerBoard', () => {
  it('keeps one breaker per provider and per key, and lists those that are not closed', () => {
    const board = new BreakerBoard();
    assert.equal(board.provider('mock'), board.provider('mock'));
    assert.equal(board.key('main', 'k1'), board.key('main', 'k1'));
    assert.notEqual(board.key('main', 'k1'), board.key('other', 'k1'));
    record(board.key('main', 'k2'), 5, 'unavailable');
    record(board.provider('mock'), 3, 'unavailable');
    assert.deepEqual(board.snapshot(), [
      { id: 'main/k2', scope: 'key', providerId: undefined, poolId: 'main', keyId: 'k2', state: 'open', sinceMs: T0, reason: 'consecutive_failures', openUntilMs: T0 + 5_000 },
    ]);
    board.key('main', 'k2').acquire(T0 + 5_000);
    assert.deepEqual(board.snapshot(), [
      { id: 'main/k2', scope: 'key', providerId: undefined, poolId: 'main', keyId: 'k2', state: 'half_open', sinceMs: T0 + 5_000, reason: 'consecutive_failures', openUntilMs: undefined },
    ]);
    assert.deepEqual(board.snapshot(true).map((b) => [b.id, b.state]), [['mock', 'closed'], ['main/k1', 'closed'], ['main/k2', 'half_open'], ['other/k1', 'closed']]);
  });
});
