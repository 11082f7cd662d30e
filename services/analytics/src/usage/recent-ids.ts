/**
 * The last `capacity` ids seen, for de-duplicating at-least-once delivery:
 * redeliveries arrive close to the original, so a bounded window is enough and
 * memory stays flat however long the service runs. A ring of ids plus a Set:
 * no allocation per id once the ring is full.
 */
export class RecentIds {
  private readonly seen = new Set<string>();
  private readonly ring: string[];
  private next = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity <= 0) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.ring = new Array<string>(capacity);
  }

  /** Remembers `id`; false when it is already remembered. */
  add(id: string): boolean {
    if (this.seen.has(id)) return false;
    const evicted = this.ring[this.next];
    if (evicted !== undefined) this.seen.delete(evicted);
    this.ring[this.next] = id;
    this.next = (this.next + 1) % this.capacity;
    this.seen.add(id);
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}
