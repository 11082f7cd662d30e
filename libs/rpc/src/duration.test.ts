import assert from 'node:assert/strict';
import { durationOfMs, msOfDuration } from './duration';

describe('durationOfMs', () => {
  it('keeps whole and fractional milliseconds to the nanosecond', () => {
    assert.deepEqual(durationOfMs(0), { seconds: 0n, nanos: 0 });
    assert.deepEqual(durationOfMs(1_500), { seconds: 1n, nanos: 500_000_000 });
    assert.deepEqual(durationOfMs(3000 / 7), { seconds: 0n, nanos: 428_571_429 });
  });

  it('reads back what it wrote, fractions included, and nothing from an absent field', () => {
    assert.equal(msOfDuration(durationOfMs(3000 / 7)), 428.571429);
    assert.equal(msOfDuration(undefined), undefined);
  });

  it('carries nanos that round up to a whole second into the seconds', () => {
    assert.deepEqual(durationOfMs(1_999.9999999), { seconds: 2n, nanos: 0 });
  });
});
