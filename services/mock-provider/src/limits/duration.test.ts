import assert from 'node:assert/strict';
import { formatGoDuration } from './duration';

describe('formatGoDuration', () => {
  it('prints durations under a second in milliseconds', () => {
    assert.equal(formatGoDuration(20), '20ms');
    assert.equal(formatGoDuration(999), '999ms');
  });

  it('prints zero and negative durations as 0s', () => {
    assert.equal(formatGoDuration(0), '0s');
    assert.equal(formatGoDuration(-5), '0s');
  });

  it('rounds fractions of a millisecond up so a client never retries early', () => {
    assert.equal(formatGoDuration(19.2), '20ms');
    assert.equal(formatGoDuration(999.5), '1s');
  });

  it('prints seconds with a trimmed fraction like Go', () => {
    assert.equal(formatGoDuration(1_000), '1s');
    assert.equal(formatGoDuration(1_500), '1.5s');
    assert.equal(formatGoDuration(8_640), '8.64s');
    assert.equal(formatGoDuration(1_005), '1.005s');
  });

  it('prints minutes and hours with every smaller unit, as 6m0s and 2h0m0s', () => {
    assert.equal(formatGoDuration(360_000), '6m0s');
    assert.equal(formatGoDuration(90_000), '1m30s');
    assert.equal(formatGoDuration(7_200_000), '2h0m0s');
    assert.equal(formatGoDuration(3_661_250), '1h1m1.25s');
  });
});
