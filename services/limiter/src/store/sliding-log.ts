/**
 * An exact sliding log for one window limit: the times of the last `requests`
 * admissions in a ring. A new admission fits iff the admission `requests` ago
 * has left the window, i.e. is <= now - perMs; so no interval [t, t + perMs)
 * ever holds more than `requests` admissions, wherever the provider's own
 * windows start.
 *
 * Admissions must be recorded in non-decreasing time (the memory store clamps a
 * clock that steps back), which keeps the ring sorted from `head` round to
 * `head - 1`; `remaining` binary-searches it. O(1) per admission, O(log N) per
 * headroom read, no allocation after construction.
 */
export class SlidingLog {
  /** Slot of the oldest admission, i.e. the next one to overwrite. */
  private head = 0;
  private readonly times: Float64Array;

  constructor(
    readonly requests: number,
    readonly perMs: number,
  ) {
    this.times = new Float64Array(requests).fill(Number.NEGATIVE_INFINITY);
  }

  /**
   * Whether one more admission keeps the window at most `cap` (1 to requests)
   * full: the admission `cap` ago has left it. cap = requests: any room at all.
   */
  hasRoomUnder(nowMs: number, cap: number): boolean {
    return this.at(this.requests - cap) <= nowMs - this.perMs;
  }

  /** 0 when hasRoomUnder; else exactly until the admission `cap` ago leaves the window. */
  waitMsUnder(nowMs: number, cap: number): number {
    const waitMs = this.at(this.requests - cap) + this.perMs - nowMs;
    return waitMs > 0 ? waitMs : 0;
  }

  /** Admissions the window would still take now: the entries that have left it. */
  remaining(nowMs: number): number {
    const cutoffMs = nowMs - this.perMs;
    let lo = 0;
    let hi = this.requests;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.at(mid) <= cutoffMs) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Until the newest admission leaves, i.e. the window is back to full. */
  resetInMs(nowMs: number): number {
    const resetMs = this.at(this.requests - 1) + this.perMs - nowMs;
    return resetMs > 0 ? resetMs : 0;
  }

  record(atMs: number): void {
    this.times[this.head] = atMs;
    this.head = this.head + 1 === this.requests ? 0 : this.head + 1;
  }

  /**
   * Removes up to `count` admissions recorded at exactly atMs (a lease's
   * unspent slots), returning how many; the ring's oldest slots become
   * empty. Admissions recorded at the same time are interchangeable, and
   * none that was overwritten to make room could still be in the window
   * (every admission needs the oldest one out of it), so the emptied slots
   * hide nothing this window would count.
   */
  forget(atMs: number, count: number): number {
    const times = Array.from({ length: this.requests }, (_, i) => this.at(i));
    const first = times.indexOf(atMs);
    if (first < 0 || count <= 0) return 0;
    let removed = 0;
    while (removed < count && first + removed < times.length && times[first + removed] === atMs) removed++;
    times.splice(first, removed);
    this.times.fill(Number.NEGATIVE_INFINITY, 0, removed);
    this.times.set(times, removed);
    this.head = 0;
    return removed;
  }

  /**
   * Seeds an empty log with the newest admissions of `source` (as many as fit in
   * both). Every window of a key records every admission, so the log with the
   * most slots holds the key's longest recent history.
   */
  seedFrom(source: SlidingLog): void {
    const count = Math.min(this.requests, source.requests);
    for (let i = 0; i < count; i++) {
      this.times[this.requests - count + i] = source.at(source.requests - count + i);
    }
    this.head = 0;
  }

  /** The i-th admission from the oldest (0) to the newest (requests - 1). */
  private at(i: number): number {
    const slot = this.head + i;
    return this.times[slot < this.requests ? slot : slot - this.requests];
  }
}
