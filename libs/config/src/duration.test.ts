import assert from 'node:assert/strict';
import { formatDuration, parseDuration } from './duration';

describe('parseDuration', () => {
  it('reads single-unit durations in every unit', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('1s'), 1_000);
    assert.equal(parseDuration('2m'), 120_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('1d'), 86_400_000);
  });

  it('reads compound durations such as 1m30s and 1d2h3m4s5ms', () => {
    assert.equal(parseDuration('1m30s'), 90_000);
    assert.equal(parseDuration('1s500ms'), 1_500);
    assert.equal(parseDuration('1d2h3m4s5ms'), 86_400_000 + 7_200_000 + 180_000 + 4_000 + 5);
  });

  it('reads zero, leaving the rule that a duration be positive to the schema', () => {
    assert.equal(parseDuration('0ms'), 0);
    assert.equal(parseDuration('0s'), 0);
  });

  for (const bad of ['', '1', '1x', '1sec', '1.5s', '-1s', ' 1s', '1s ', '1 s', 's', '1mm', '1S']) {
    it(`rejects ${JSON.stringify(bad)}, naming it`, () => {
      assert.throws(() => parseDuration(bad), (err: Error) => err.message.includes(JSON.stringify(bad)) && err.message.includes('"500ms"'));
    });
  }

  it('rejects units out of order or repeated', () => {
    assert.throws(() => parseDuration('30s1m'), /largest to smallest/);
    assert.throws(() => parseDuration('1s1s'), /largest to smallest/);
  });

  it('rejects durations beyond the safe integer range', () => {
    assert.throws(() => parseDuration('999999999999999d'), /too large/);
  });
});

describe('formatDuration', () => {
  it('formats milliseconds in the compound form parseDuration reads back', () => {
    assert.equal(formatDuration(0), '0ms');
    assert.equal(formatDuration(500), '500ms');
    assert.equal(formatDuration(90_000), '1m30s');
    assert.equal(formatDuration(86_400_000), '1d');
    assert.equal(formatDuration(2 ** 31 - 1), '24d20h31m23s647ms');
    for (const ms of [1, 999, 1_000, 61_001, 3_600_000, 93_784_005]) assert.equal(parseDuration(formatDuration(ms)), ms);
  });

  it('rounds fractions to whole milliseconds', () => {
    assert.equal(formatDuration(1.6), '2ms');
  });

  it('refuses negative or non-finite durations', () => {
    assert.throws(() => formatDuration(-1), RangeError);
    assert.throws(() => formatDuration(Number.NaN), RangeError);
    assert.throws(() => formatDuration(Number.POSITIVE_INFINITY), RangeError);
  });
});
