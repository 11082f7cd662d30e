import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { RecentIds } from './recent-ids';

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/** What RecentIds must answer: the last `capacity` distinct ids accepted, in order. */
class RecentIdsModel {
  private readonly order: string[] = [];
  constructor(private readonly capacity: number) {}
  add(id: string): boolean {
    if (this.order.includes(id)) return false;
    if (this.order.length === this.capacity) this.order.shift();
    this.order.push(id);
    return true;
  }
}

/** A deterministic pseudo-random sequence (xorshift32), so a failure replays. */
function randomInts(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

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

  it('answers as the last `capacity` ids would, through many evictions that wrap around its index', () => {
    for (const capacity of [1, 2, 3, 7, 64, 100]) {
      const ids = new RecentIds(capacity);
      const model = new RecentIdsModel(capacity);
      const next = randomInts(capacity * 7919);
      // Few distinct ids, so repeats both within and just beyond the window are common.
      for (let op = 0; op < 20_000; op++) {
        const id = `req-${next() % (capacity * 3)}`;
        assert.equal(ids.add(id), model.add(id), `capacity ${capacity}, op ${op}, id ${id}`);
      }
      assert.equal(ids.size, capacity);
    }
  });

  it('keeps no id string alive: memory is the same for long ids as for short ones', () => {
    const ids = new RecentIds(20_000);
    const bytes = Buffer.alloc(2_000, 'x');
    collectGarbage();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 20_000; i++) {
      bytes.writeUInt32BE(i, 0);
      // A fresh flat 2 KB string each time: 40 MB in all if they were kept.
      assert.equal(ids.add(bytes.toString('latin1')), true);
    }
    collectGarbage();
    const grownMb = (process.memoryUsage().heapUsed - before) / 1_048_576;
    assert.ok(grownMb < 8, `the heap grew by ${grownMb.toFixed(1)} MB`);
    bytes.writeUInt32BE(19_999, 0);
    assert.equal(ids.add(bytes.toString('latin1')), false, 'the last id is still remembered');
  });
});
