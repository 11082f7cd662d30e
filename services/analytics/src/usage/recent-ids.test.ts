import assert from 'node:assert/strict';
import { RecentIds } from './recent-ids';

describe('RecentIds', () => {
  it('accepts an id once while it is remembered', () => {
    const ids = new RecentIds(3);
    assert.equal(ids.add('a'), true);
    assert.equal(ids.add('a'), false);
  });

  it('remembers only the last `capacity` ids, so memory stays bounded', () => {
    const ids = new RecentIds(3);
    for (const id of ['a', 'b', 'c', 'd']) assert.equal(ids.add(id), true);
    assert.equal(ids.size, 3);
    assert.equal(ids.add('b'), false, 'b is still among the last three');
    assert.equal(ids.add('a'), true, 'a was forgotten when d arrived');
    assert.equal(ids.size, 3);
  });

  it('rejects a capacity that is not a positive integer', () => {
    assert.throws(() => new RecentIds(0), RangeError);
  });
});
