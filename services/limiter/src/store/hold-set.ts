/**
 * The holds in flight on one key with a concurrency cap (memory store), each
 * until its expiry: a hold whose holder died is freed at its expiry, never
 * before. Expired holds are dropped whenever the set is looked at, as the
 * Redis store trims its ZSET inside each script (lua/holds.ts).
 */
export class HoldSet {
  /** holdId -> expiresAtMs. At most `cap` entries are ever unexpired, so scans stay short. */
  private readonly expiries = new Map<string, number>();

  constructor(readonly cap: number) {}

  /** Holds still in flight at nowMs (a hold expiring exactly at nowMs is gone). */
  inFlight(nowMs: number): number {
    this.trim(nowMs);
    return this.expiries.size;
  }

  /**
   * In one pass, as lua/holds.ts holdRoom: waitMs 0 when a hold is free at
   * nowMs, else until the earliest hold expires; headroom the free holds'
   * share of the cap.
   */
  room(nowMs: number): { waitMs: number; headroom: number } {
    const free = this.cap - this.inFlight(nowMs);
    if (free > 0) return { waitMs: 0, headroom: free / this.cap };
    let earliestMs = Number.POSITIVE_INFINITY;
    for (const expiresAtMs of this.expiries.values()) earliestMs = Math.min(earliestMs, expiresAtMs);
    return { waitMs: earliestMs - nowMs, headroom: 0 };
  }

  take(holdId: string, expiresAtMs: number): void {
    this.expiries.set(holdId, expiresAtMs);
  }

  release(holdId: string): void {
    this.expiries.delete(holdId);
  }

  /** Extends a hold still in flight; false for one already expired or released. */
  renew(holdId: string, nowMs: number, expiresAtMs: number): boolean {
    this.trim(nowMs);
    if (!this.expiries.has(holdId)) return false;
    this.expiries.set(holdId, Math.max(expiresAtMs, this.expiries.get(holdId)!));
    return true;
  }

  /** Holds carried over to a new cap (a config change): requests in flight stay counted. */
  copyTo(next: HoldSet): void {
    for (const [holdId, expiresAtMs] of this.expiries) next.take(holdId, expiresAtMs);
  }

  private trim(nowMs: number): void {
    for (const [holdId, expiresAtMs] of this.expiries) if (expiresAtMs <= nowMs) this.expiries.delete(holdId);
  }
}
