import assert from 'node:assert/strict';
import { KeyLimits, WindowLog } from './sliding-window';

describe('WindowLog', () => {
  it('admits exactly the limit within one window and counts an entry until perMs after it', () => {
    const log = new WindowLog('requests', 2, 1_000);
    log.record(0, 1);
    log.record(400, 1);
    log.evict(999);
    assert.equal(log.admits(1), false);
    assert.equal(log.waitMs(1, 999), 1);
    log.evict(1_000);
    assert.equal(log.admits(1), true);
    assert.equal(log.remaining, 1);
  });

  it('waits for enough old tokens to expire to fit a large request', () => {
    const log = new WindowLog('tokens', 100, 1_000);
    log.record(0, 30);
    log.record(100, 30);
    log.record(200, 30);
    log.evict(500);
    // 90 used, 70 wanted: 60 must expire, which happens when the entry at 100 leaves.
    assert.equal(log.waitMs(70, 500), 600);
  });

  it('keeps its count right across compaction of a long log', () => {
    const log = new WindowLog('requests', 10, 10);
    for (let t = 0; t < 5_000; t += 1) {
      log.evict(t);
      if (log.admits(1)) log.record(t, 1);
    }
    log.evict(4_999);
    assert.equal(log.used, 10);
    assert.equal(log.waitMs(1, 4_999), 1);
  });
});

describe('KeyLimits', () => {
  it('does not charge a rejected request to any window', () => {
    const limits = new KeyLimits([{ requests: 1, perMs: 1_000 }, { tokens: 1_000, perMs: 1_000 }]);
    assert.equal(limits.admit(0, 10).admitted, true);
    const rejected = limits.admit(1, 10);
    assert.equal(rejected.admitted, false);
    assert.equal(rejected.headers['x-ratelimit-remaining-tokens'], '990');
  });

  it('names the dimension and the longest wait among the windows that refuse', () => {
    const limits = new KeyLimits([{ requests: 5, tokens: 100, perMs: 60_000 }]);
    assert.equal(limits.admit(0, 80).admitted, true);
    const admission = limits.admit(1_000, 50);
    assert.equal(admission.admitted, false);
    if (admission.admitted) return;
    assert.deepEqual(admission.rejection, { dimension: 'tokens', limit: 100, used: 80, requested: 50, perMs: 60_000, retryAfterMs: 59_000 });
  });

  it('reports the tightest of several windows in the headers', () => {
    const limits = new KeyLimits([{ requests: 100, perMs: 3_600_000 }, { requests: 2, perMs: 1_000 }]);
    const { headers } = limits.admit(0, 0);
    assert.equal(headers['x-ratelimit-limit-requests'], '2');
    assert.equal(headers['x-ratelimit-remaining-requests'], '1');
    assert.equal(headers['x-ratelimit-reset-requests'], '1s');
    assert.equal(headers['x-ratelimit-limit-tokens'], undefined);
  });
});
