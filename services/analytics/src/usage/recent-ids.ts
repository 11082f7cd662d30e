/**
 * The last `capacity` ids seen, for de-duplicating at-least-once delivery:
 * redeliveries arrive close to the original, so a bounded window is enough and
 * memory stays flat however long the service runs.
 *
 * Ids are remembered as 64-bit fingerprints in typed arrays (a ring in arrival
 * order, and an open-addressing index into it), never as strings. A remembered
 * string outlives every young-generation collection, so each event promoted its
 * id, and the Set entry holding it, to the old generation: at a few thousand
 * events a second that was half of everything the embedded mesh promoted, and
 * what set the pace of its full collections. Here an add allocates nothing.
 *
 * Two different ids share a fingerprint with a probability of about n²/2⁶⁵
 * among n remembered ids (3·10⁻¹⁰ for 100,000); such an event would be counted
 * as a redelivery.
 */
export class RecentIds {
  /** Fingerprint of the id in ring slot s: high word at 2s, low word at 2s+1. */
  private readonly ring: Uint32Array;
  /** Linear probing over ring slots; 0 is an empty cell, otherwise slot + 1. */
  private readonly index: Int32Array;
  private readonly mask: number;
  private next = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity <= 0) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.ring = new Uint32Array(capacity * 2);
    // At most half full, so probes stay short.
    let cells = 2;
    while (cells < capacity * 2) cells *= 2;
    this.index = new Int32Array(cells);
    this.mask = cells - 1;
  }

  /** Remembers `id`; false when it is already remembered. */
  add(id: string): boolean {
    const high = fingerprintHigh(id);
    const low = fingerprintLow(id);
    let cell = low & this.mask;
    for (let entry = this.index[cell]; entry !== 0; entry = this.index[cell]) {
      const slot = entry - 1;
      if (this.ring[2 * slot] === high && this.ring[2 * slot + 1] === low) return false;
      cell = (cell + 1) & this.mask;
    }
    if (this.count === this.capacity) {
      this.forget(this.next);
      // The cell found above may have moved up when the eviction closed its gap.
      cell = low & this.mask;
      while (this.index[cell] !== 0) cell = (cell + 1) & this.mask;
    } else {
      this.count++;
    }
    const slot = this.next;
    this.ring[2 * slot] = high;
    this.ring[2 * slot + 1] = low;
    this.index[cell] = slot + 1;
    this.next = slot + 1 === this.capacity ? 0 : slot + 1;
    return true;
  }

  get size(): number {
    return this.count;
  }

  /** Removes ring slot `slot` from the index, closing the gap so no probe chain breaks (no tombstones). */
  private forget(slot: number): void {
    const mask = this.mask;
    let hole = this.ring[2 * slot + 1] & mask;
    while (this.index[hole] !== slot + 1) hole = (hole + 1) & mask;
    for (let cell = (hole + 1) & mask; this.index[cell] !== 0; cell = (cell + 1) & mask) {
      const home = this.ring[2 * (this.index[cell] - 1) + 1] & mask;
      // The entry at `cell` may fill the hole unless its home lies cyclically in (hole, cell].
      const homeBetween = hole <= cell ? home > hole && home <= cell : home > hole || home <= cell;
      if (!homeBetween) {
        this.index[hole] = this.index[cell];
        hole = cell;
      }
    }
    this.index[hole] = 0;
  }
}

/** FNV-1a over UTF-16 code units, then murmur3's finalizer so every bit depends on every input. */
function fingerprintLow(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return finalize(h);
}

/** An independent 32 bits: a different multiplier and seed over the same code units. */
function fingerprintHigh(id: string): number {
  let h = 0x9747b28c ^ id.length;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x5bd1e995) ^ (h >>> 15);
  return finalize(h);
}

function finalize(hash: number): number {
  let h = hash;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
