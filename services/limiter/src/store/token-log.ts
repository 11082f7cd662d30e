import type { TokenWindowLimit } from '../domain/types';

/** Compact the arrays once this many pruned entries sit before the head (and they are most of them). */
const COMPACT_AFTER = 1024;

/**
 * One key's admissions with their token weights, oldest first, kept as long
 * as its longest token window can see them; every token window of the key
 * reads this one log, as every request window records every admission.
 *
 * A window of N tokens over perMs takes `tokens` more at nowMs iff the
 * weights stamped in (nowMs - perMs, +inf) plus `tokens` are at most N.
 * Admissions are recorded in non-decreasing time (the store clamps), so, as
 * with SlidingLog, checking the window that ends at each admission bounds
 * every interval: any interval's admissions all lie in the window ending at
 * its newest one, and weights only ever shrink after they were checked.
 *
 * Reads scan the entries in a window: O(admissions per window), which for
 * token limits (thousands of tokens per request) stays small.
 */
export class TokenLog {
  private times: number[] = [];
  private weights: number[] = [];
  private ids: number[] = [];
  private head = 0;
  private readonly maxPerMs: number;

  constructor(readonly limits: readonly TokenWindowLimit[]) {
    this.maxPerMs = limits.reduce((max, l) => Math.max(max, l.perMs), 0);
  }

  /** Tokens the window holds at nowMs. */
  used(limit: TokenWindowLimit, nowMs: number): number {
    const cutoffMs = nowMs - limit.perMs;
    let sum = 0;
    for (let i = this.times.length - 1; i >= this.head && this.times[i]! > cutoffMs; i--) sum += this.weights[i]!;
    return sum;
  }

  remaining(limit: TokenWindowLimit, nowMs: number): number {
    return Math.max(0, limit.tokens - this.used(limit, nowMs));
  }

  /**
   * 0 when `tokens` fit now; else exactly until enough of the oldest
   * admissions have left the window; Infinity when they never can (more
   * tokens than the limit).
   */
  waitMs(limit: TokenWindowLimit, nowMs: number, tokens: number): number {
    if (tokens > limit.tokens) return Number.POSITIVE_INFINITY;
    const cutoffMs = nowMs - limit.perMs;
    let used = this.used(limit, nowMs);
    if (used + tokens <= limit.tokens) return 0;
    let i = this.head;
    while (this.times[i]! <= cutoffMs) i++;
    for (; i < this.times.length; i++) {
      used -= this.weights[i]!;
      if (used + tokens <= limit.tokens) return this.times[i]! + limit.perMs - nowMs;
    }
    // Unreachable: with every entry gone, used is 0 and tokens fit.
    return Number.POSITIVE_INFINITY;
  }

  /** Until the newest admission leaves the window; 0 when nothing is in it. */
  resetInMs(limit: TokenWindowLimit, nowMs: number): number {
    if (this.times.length === this.head) return 0;
    const resetMs = this.times[this.times.length - 1]! + limit.perMs - nowMs;
    return resetMs > 0 ? resetMs : 0;
  }

  /**
   * Records `tokens` at `atMs` (a lease's end, or later than `nowMs` after a
   * clock step: never earlier), forgetting what no window sees at `nowMs`.
   * Pruning at `atMs` would drop admissions still inside a window now.
   */
  record(nowMs: number, atMs: number, tokens: number, id: number): void {
    this.prune(nowMs);
    this.times.push(atMs);
    this.weights.push(tokens);
    this.ids.push(id);
  }

  /** Shrinks admission `id` by up to `tokens`; false when it has left every window. */
  refund(id: number, tokens: number): boolean {
    // Ids grow with time (one store-wide counter, admissions in time order).
    let lo = this.head;
    let hi = this.ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ids[mid]! < id) lo = mid + 1;
      else hi = mid;
    }
    if (lo === this.ids.length || this.ids[lo] !== id) return false;
    this.weights[lo] = Math.max(0, this.weights[lo]! - tokens);
    return true;
  }

  /** Seeds an empty log with every admission of `source` (a limit change keeps what was spent). */
  seedFrom(source: TokenLog): void {
    this.times = source.times.slice(source.head);
    this.weights = source.weights.slice(source.head);
    this.ids = source.ids.slice(source.head);
    this.head = 0;
  }

  private prune(nowMs: number): void {
    const cutoffMs = nowMs - this.maxPerMs;
    while (this.head < this.times.length && this.times[this.head]! <= cutoffMs) this.head++;
    if (this.head >= COMPACT_AFTER && this.head * 2 >= this.times.length) {
      this.times = this.times.slice(this.head);
      this.weights = this.weights.slice(this.head);
      this.ids = this.ids.slice(this.head);
      this.head = 0;
    }
  }
}
