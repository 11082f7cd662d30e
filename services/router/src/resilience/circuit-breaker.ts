import type { FailureKind } from '../providers';

export type BreakerState = 'closed' | 'open' | 'half_open';
export type BreakerReason = 'consecutive_failures' | 'failure_rate' | 'probe_failed';

/**
 * What `acquire` handed out. A probe must be given back (through `succeeded`,
 * `failed` or `release`), or the half-open breaker stays full.
 */
export const enum Permit {
  Denied = 0,
  Pass = 1,
  Probe = 2,
}

export interface BreakerOptions {
  /** 'unavailable' failures in a row that open a closed breaker. */
  readonly consecutiveFailures: number;
  /** The failure rate, over the last `windowSize` counted calls, that opens it... */
  readonly failureRate: number;
  readonly windowSize: number;
  /** ...once the window holds at least this many calls. */
  readonly minCalls: number;
  /** How long the first open lasts; each re-open after a failed probe doubles it, up to `maxOpenMs`. */
  readonly openMs: number;
  readonly maxOpenMs: number;
  /** Trial calls a half-open breaker lets through at once. */
  readonly probes: number;
}

export const DEFAULT_BREAKER_OPTIONS: BreakerOptions = Object.freeze({
  consecutiveFailures: 5,
  failureRate: 0.5,
  windowSize: 20,
  minCalls: 10,
  openMs: 5_000,
  maxOpenMs: 60_000,
  probes: 1,
});

/**
 * One circuit breaker, as a plain state machine with time passed in. Only
 * 'unavailable' failures (5xx, timeouts, refused connections) count: a 429 or
 * 401 is the limiter's business and a 4xx is the caller's, and neither says the
 * upstream is down. Outcomes that do not count leave the breaker as it was.
 *
 * The window is a ring of bits in a preallocated array, so recording an
 * outcome allocates nothing; a closed breaker's `acquire` reads one field.
 */
export class CircuitBreaker {
  state: BreakerState = 'closed';
  sinceMs = 0;
  reason: BreakerReason | undefined;
  /** When an open breaker half-opens. */
  openUntilMs = 0;

  private consecutive = 0;
  private readonly window: Uint8Array;
  private windowNext = 0;
  private windowCount = 0;
  private windowFailures = 0;
  private currentOpenMs: number;
  private probesInFlight = 0;

  constructor(
    readonly id: string,
    private readonly options: BreakerOptions = DEFAULT_BREAKER_OPTIONS,
  ) {
    this.window = new Uint8Array(options.windowSize);
    this.currentOpenMs = options.openMs;
  }

  /** Whether a call may go now; a half-open breaker may hand out a probe. */
  acquire(nowMs: number): Permit {
    if (this.state === 'closed') return Permit.Pass;
    if (this.state === 'open') {
      if (nowMs < this.openUntilMs) return Permit.Denied;
      this.state = 'half_open';
      this.sinceMs = nowMs;
    }
    if (this.probesInFlight >= this.options.probes) return Permit.Denied;
    this.probesInFlight++;
    return Permit.Probe;
  }

  /** Whether `acquire` would refuse now, without taking a probe. */
  blocks(nowMs: number): boolean {
    if (this.state === 'closed') return false;
    if (this.state === 'open') return nowMs < this.openUntilMs;
    return this.probesInFlight >= this.options.probes;
  }

  /** How long until a refused call could be let through (0 when a probe is already deciding). */
  retryAfterMs(nowMs: number): number {
    return this.state === 'open' ? Math.max(0, this.openUntilMs - nowMs) : 0;
  }

  succeeded(permit: Permit, nowMs: number): void {
    if (permit === Permit.Probe) {
      this.probesInFlight--;
      if (this.state === 'half_open') this.close(nowMs);
      return;
    }
    // A call let through before the breaker opened says nothing about now.
    if (this.state !== 'closed') return;
    this.consecutive = 0;
    this.push(0);
  }

  failed(permit: Permit, kind: FailureKind, nowMs: number): void {
    if (kind !== 'unavailable') {
      this.release(permit);
      return;
    }
    if (permit === Permit.Probe) {
      this.probesInFlight--;
      if (this.state === 'half_open') this.open(nowMs, 'probe_failed', Math.min(this.currentOpenMs * 2, this.options.maxOpenMs));
      return;
    }
    if (this.state !== 'closed') return;
    this.consecutive++;
    this.push(1);
    if (this.consecutive >= this.options.consecutiveFailures) {
      this.open(nowMs, 'consecutive_failures', this.options.openMs);
    } else if (this.windowCount >= this.options.minCalls && this.windowFailures >= this.options.failureRate * this.windowCount) {
      this.open(nowMs, 'failure_rate', this.options.openMs);
    }
  }

  /** Gives back a permit whose call never happened or whose outcome does not count. */
  release(permit: Permit): void {
    if (permit === Permit.Probe) this.probesInFlight--;
  }

  private push(failure: 0 | 1): void {
    const size = this.window.length;
    if (size === 0) return;
    if (this.windowCount === size) this.windowFailures -= this.window[this.windowNext];
    else this.windowCount++;
    this.window[this.windowNext] = failure;
    this.windowFailures += failure;
    this.windowNext = (this.windowNext + 1) % size;
  }

  private open(nowMs: number, reason: BreakerReason, openMs: number): void {
    this.state = 'open';
    this.sinceMs = nowMs;
    this.reason = reason;
    this.currentOpenMs = openMs;
    this.openUntilMs = nowMs + openMs;
    this.resetCounts();
  }

  private close(nowMs: number): void {
    this.state = 'closed';
    this.sinceMs = nowMs;
    this.reason = undefined;
    this.currentOpenMs = this.options.openMs;
    this.resetCounts();
  }

  private resetCounts(): void {
    this.consecutive = 0;
    this.windowNext = 0;
    this.windowCount = 0;
    this.windowFailures = 0;
  }
}
