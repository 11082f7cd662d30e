/** A request's priority class: who is served first when every key is momentarily full. */
export type RequestPriority = 'low' | 'normal' | 'high';

const RANK: Record<RequestPriority, number> = { high: 0, normal: 1, low: 2 };

/** Time and timers, injected so the queue's order and bounds can be tested with a fake clock. */
export interface WaitTimers {
  nowMs(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const REAL_TIMERS: WaitTimers = {
  nowMs: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** A denied request's place in its route's line. */
export interface WaitTicket {
  /**
   * Waits for this request's turn to try again: resolves true when it is the
   * first waiting request (priority, then arrival) and capacity may have
   * returned (the latest retry-after passed, or the request before it was
   * admitted); false when its own bound passed first, and it has left the line.
   * `retryAfterMs`: what the denial that brought it here said, if anything.
   */
  next(retryAfterMs: number | undefined): Promise<boolean>;
  /** Leaves the line. `admitted`: capacity was there, so the next request's turn comes at once. */
  leave(admitted: boolean): void;
  /** An honest retry-after for a caller turned away: until capacity may return, at least 1 ms. */
  retryAfterMs(): number;
}

interface Waiter {
  readonly rank: number;
  readonly seq: number;
  readonly untilMs: number;
  /** Set while waiting for a turn. */
  resolve: ((turn: boolean) => void) | undefined;
  timer: unknown;
  left: boolean;
}

interface Line {
  /** In service order: rank, then arrival. */
  readonly waiters: Waiter[];
  /** The one request trying now, between its turn and its next denial or admission. */
  active: Waiter | undefined;
  /** When capacity may return: the latest denial's retry-after (now, after an admission). */
  readyAtMs: number;
  timer: unknown;
}

/** Between turns when a denial said nothing about when (should not happen for KEY_POOL_EXHAUSTED). */
const UNKNOWN_RETRY_MS = 50;

/**
 * The router's bounded waiting line per route, for requests that found every
 * key momentarily full. One request at a time tries again, in priority then
 * arrival order, when capacity may have returned; an admitted request hands
 * the turn on at once, so a window that frees N slots serves the first N
 * waiters back to back, and none of the rest wakes for nothing. Each waiter
 * leaves by its own bound (min(route max_wait, its deadline)); a full line
 * turns newcomers away at once.
 */
export class WaitQueue {
  private readonly lines = new Map<string, Line>();
  private seq = 0;

  constructor(
    private readonly capacityPerLine: number = 1_024,
    private readonly timers: WaitTimers = REAL_TIMERS,
  ) {}

  /** How many requests wait on the line now (0 for a line nobody joined). */
  size(lineId: string): number {
    return this.lines.get(lineId)?.waiters.length ?? 0;
  }

  /** Joins the line, or undefined when it is full (the caller is turned away with `retryAfterMs(lineId)`). */
  join(lineId: string, priority: RequestPriority, untilMs: number): WaitTicket | undefined {
    let line = this.lines.get(lineId);
    if (line === undefined) {
      line = { waiters: [], active: undefined, readyAtMs: this.timers.nowMs(), timer: undefined };
      this.lines.set(lineId, line);
    }
    if (line.waiters.length >= this.capacityPerLine) return undefined;
    const waiter: Waiter = { rank: RANK[priority], seq: ++this.seq, untilMs, resolve: undefined, timer: undefined, left: false };
    insertInOrder(line.waiters, waiter);
    const current = line;
    return {
      next: (retryAfterMs) => this.next(lineId, current, waiter, retryAfterMs),
      leave: (admitted) => this.leave(lineId, current, waiter, admitted),
      retryAfterMs: () => this.lineRetryAfterMs(current),
    };
  }

  /**
   * Capacity came back before the last denial's retry-after said it would
   * (a concurrency slot was released: the retry-after was its hold's expiry,
   * the latest it could free): the first waiter tries now.
   */
  wake(lineId: string): void {
    const line = this.lines.get(lineId);
    if (line === undefined) return;
    line.readyAtMs = Math.min(line.readyAtMs, this.timers.nowMs());
    this.schedule(lineId, line);
  }

  /** For a caller turned away from a full line. */
  retryAfterMs(lineId: string): number {
    const line = this.lines.get(lineId);
    return line === undefined ? UNKNOWN_RETRY_MS : this.lineRetryAfterMs(line);
  }

  private lineRetryAfterMs(line: Line): number {
    return Math.max(1, Math.ceil(line.readyAtMs - this.timers.nowMs()));
  }

  private next(lineId: string, line: Line, waiter: Waiter, retryAfterMs: number | undefined): Promise<boolean> {
    if (waiter.left) return Promise.resolve(false);
    const nowMs = this.timers.nowMs();
    // The latest denial is the freshest word on when a key frees up (keys free at
    // different times), so it replaces, rather than extends, what the line knew.
    if (retryAfterMs !== undefined || line.active === waiter) line.readyAtMs = nowMs + (retryAfterMs ?? UNKNOWN_RETRY_MS);
    if (line.active === waiter) line.active = undefined;
    if (nowMs >= waiter.untilMs) {
      this.remove(lineId, line, waiter);
      this.schedule(lineId, line);
      return Promise.resolve(false);
    }
    return new Promise<boolean>((resolve) => {
      waiter.resolve = resolve;
      waiter.timer = this.timers.setTimeout(() => {
        if (waiter.resolve === undefined) return;
        waiter.resolve = undefined;
        this.remove(lineId, line, waiter);
        resolve(false);
        this.schedule(lineId, line);
      }, waiter.untilMs - nowMs);
      this.schedule(lineId, line);
    });
  }

  private leave(lineId: string, line: Line, waiter: Waiter, admitted: boolean): void {
    if (waiter.left) return;
    const wasActive = line.active === waiter;
    if (wasActive) line.active = undefined;
    const resolve = waiter.resolve;
    waiter.resolve = undefined;
    this.remove(lineId, line, waiter);
    resolve?.(false);
    // Admitted: the capacity that served this one may serve the next, now.
    if (admitted && wasActive) line.readyAtMs = this.timers.nowMs();
    this.schedule(lineId, line);
  }

  private remove(lineId: string, line: Line, waiter: Waiter): void {
    waiter.left = true;
    if (waiter.timer !== undefined) this.timers.clearTimeout(waiter.timer);
    waiter.timer = undefined;
    const at = line.waiters.indexOf(waiter);
    if (at >= 0) line.waiters.splice(at, 1);
    if (line.waiters.length === 0) {
      if (line.timer !== undefined) this.timers.clearTimeout(line.timer);
      this.lines.delete(lineId);
    }
  }

  /** Gives the turn to the first waiting request once capacity may be back; one turn at a time. */
  private schedule(lineId: string, line: Line): void {
    if (line.timer !== undefined) {
      this.timers.clearTimeout(line.timer);
      line.timer = undefined;
    }
    if (line.active !== undefined || this.lines.get(lineId) !== line) return;
    const first = line.waiters.find((w) => w.resolve !== undefined);
    if (first === undefined) return;
    const waitMs = line.readyAtMs - this.timers.nowMs();
    if (waitMs > 0) {
      line.timer = this.timers.setTimeout(() => {
        line.timer = undefined;
        this.schedule(lineId, line);
      }, waitMs);
      return;
    }
    const resolve = first.resolve!;
    first.resolve = undefined;
    if (first.timer !== undefined) this.timers.clearTimeout(first.timer);
    first.timer = undefined;
    line.active = first;
    resolve(true);
  }
}

function insertInOrder(waiters: Waiter[], waiter: Waiter): void {
  let at = waiters.length;
  while (at > 0 && waiters[at - 1]!.rank > waiter.rank) at--;
  waiters.splice(at, 0, waiter);
}
