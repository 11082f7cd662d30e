import { formatGoDuration } from './duration';
import type { WindowLimit } from '../types';

export type LimitDimension = 'requests' | 'tokens';

/** Below this many expired entries the log is not worth compacting. */
const COMPACT_MIN_EXPIRED = 256;

/**
 * One sliding window log: an entry recorded at `t` counts against every interval
 * `(now - perMs, now]` that contains it, so it stops counting at `t + perMs`.
 * Unlike a fixed window this never admits a burst of 2N across a boundary,
 * which is the promise the limiter makes ("at most N in any interval").
 */
export class WindowLog {
  private readonly times: number[] = [];
  private readonly amounts: number[] = [];
  private head = 0;
  private usedAmount = 0;

  constructor(
    readonly dimension: LimitDimension,
    readonly limit: number,
    readonly perMs: number,
  ) {}

  get used(): number {
    return this.usedAmount;
  }

  get remaining(): number {
    return Math.max(0, this.limit - this.usedAmount);
  }

  evict(nowMs: number): void {
    const { times, amounts, perMs } = this;
    let head = this.head;
    while (head < times.length && times[head] + perMs <= nowMs) {
      this.usedAmount -= amounts[head];
      head += 1;
    }
    this.head = head;
    if (head >= COMPACT_MIN_EXPIRED && head * 2 >= times.length) {
      times.splice(0, head);
      amounts.splice(0, head);
      this.head = 0;
    }
  }

  admits(cost: number): boolean {
    return this.usedAmount + cost <= this.limit;
  }

  /** Time until `cost` fits, assuming `evict(nowMs)` ran. A cost above the limit never fits: one full window. */
  waitMs(cost: number, nowMs: number): number {
    if (cost > this.limit) return this.perMs;
    let excess = this.usedAmount + cost - this.limit;
    for (let i = this.head; i < this.times.length; i += 1) {
      excess -= this.amounts[i];
      if (excess <= 0) return this.times[i] + this.perMs - nowMs;
    }
    return 0;
  }

  record(nowMs: number, cost: number): void {
    if (cost <= 0) return;
    this.times.push(nowMs);
    this.amounts.push(cost);
    this.usedAmount += cost;
  }

  /** Time until the oldest entry leaves the window (what `x-ratelimit-reset-*` reports); 0 when empty. */
  resetMs(nowMs: number): number {
    return this.head < this.times.length ? this.times[this.head] + this.perMs - nowMs : 0;
  }
}

export interface Rejection {
  dimension: LimitDimension;
  limit: number;
  used: number;
  requested: number;
  perMs: number;
  retryAfterMs: number;
}

export type RateLimitHeaders = Record<string, string>;

export type Admission =
  | { admitted: true; headers: RateLimitHeaders }
  | { admitted: false; headers: RateLimitHeaders; rejection: Rejection };

/** All windows of one key. A request is admitted only if every window has room, and then charged to all of them. */
export class KeyLimits {
  private readonly windows: WindowLog[];

  constructor(limits: readonly WindowLimit[]) {
    this.windows = [];
    for (const limit of limits) {
      if (limit.requests !== undefined) this.windows.push(new WindowLog('requests', limit.requests, limit.perMs));
      if (limit.tokens !== undefined) this.windows.push(new WindowLog('tokens', limit.tokens, limit.perMs));
    }
  }

  admit(nowMs: number, tokens: number): Admission {
    const { windows } = this;
    for (const window of windows) window.evict(nowMs);

    let rejection: Rejection | undefined;
    for (const window of windows) {
      const cost = window.dimension === 'requests' ? 1 : tokens;
      if (window.admits(cost)) continue;
      const retryAfterMs = window.waitMs(cost, nowMs);
      if (rejection === undefined || retryAfterMs > rejection.retryAfterMs) {
        rejection = {
          dimension: window.dimension,
          limit: window.limit,
          used: window.used,
          requested: cost,
          perMs: window.perMs,
          retryAfterMs,
        };
      }
    }
    if (rejection !== undefined) return { admitted: false, headers: this.headers(nowMs), rejection };

    for (const window of windows) window.record(nowMs, window.dimension === 'requests' ? 1 : tokens);
    return { admitted: true, headers: this.headers(nowMs) };
  }

  /** The headers as they stand, charging nothing (for answers that are not admissions, like insufficient_quota). */
  peek(nowMs: number): RateLimitHeaders {
    for (const window of this.windows) window.evict(nowMs);
    return this.headers(nowMs);
  }

  /**
   * OpenAI reports one window per dimension; with several we report the tightest,
   * the one with the fewest remaining (ties: the one that resets last), because
   * that is the one a client reading the headers must respect.
   */
  private headers(nowMs: number): RateLimitHeaders {
    const headers: RateLimitHeaders = {};
    const requests = this.tightest('requests', nowMs);
    if (requests !== undefined) {
      headers['x-ratelimit-limit-requests'] = String(requests.limit);
      headers['x-ratelimit-remaining-requests'] = String(requests.remaining);
      headers['x-ratelimit-reset-requests'] = formatGoDuration(requests.resetMs(nowMs));
    }
    const tokens = this.tightest('tokens', nowMs);
    if (tokens !== undefined) {
      headers['x-ratelimit-limit-tokens'] = String(tokens.limit);
      headers['x-ratelimit-remaining-tokens'] = String(tokens.remaining);
      headers['x-ratelimit-reset-tokens'] = formatGoDuration(tokens.resetMs(nowMs));
    }
    return headers;
  }

  private tightest(dimension: LimitDimension, nowMs: number): WindowLog | undefined {
    let best: WindowLog | undefined;
    for (const window of this.windows) {
      if (window.dimension !== dimension) continue;
      if (
        best === undefined ||
        window.remaining < best.remaining ||
        (window.remaining === best.remaining && window.resetMs(nowMs) > best.resetMs(nowMs))
      ) {
        best = window;
      }
    }
    return best;
  }
}
