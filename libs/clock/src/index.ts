/**
 * The only source of "now" for keymesh's stateful services. Domains and stores take nowMs as
 * an argument; whoever calls them reads it from a Clock (the system clock in
 * production, a FakeClock in tests; a Redis store may substitute Redis TIME).
 */
export interface Clock {
  nowMs(): number;
}

export const systemClock: Clock = {
  nowMs: () => Date.now(),
};

/** A clock that moves only when a test moves it. */
export class FakeClock implements Clock {
  private currentMs: number;

  /** Starts at a realistic epoch time so "time 0" bugs can't hide. */
  constructor(startMs = 1_700_000_000_000) {
    this.currentMs = startMs;
  }

  nowMs(): number {
    return this.currentMs;
  }

  set(ms: number): void {
    this.currentMs = ms;
  }

  advance(ms: number): void {
    this.currentMs += ms;
  }
}
