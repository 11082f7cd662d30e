import type { SlidingLog } from './sliding-log';

/** What one lease counted in its key, so a return frees no more than that, once. */
export interface LeaseRecord {
  /** The key's windows at the grant: after a limit change they were rebuilt, and the lease's admissions may be gone. */
  readonly windows: readonly SlidingLog[];
  readonly grantMs: number;
  /** The lease's end, whose quota period counted it too when past the grant's. */
  readonly stampMs: number;
  /** Where the slots and the budget were recorded (the stamp, or later when the log had moved past it). */
  readonly admittedMs: number;
  readonly slots: number;
  readonly tokens: number;
  /** The budget's id in the key's token log. */
  readonly seq: number;
  /** After this the lease counts in no window and no quota period: a return has nothing to free. */
  readonly keptUntilMs: number;
}

/**
 * A router gives a lease back within moments of its end (or retries a failed
 * call soon after); keeping records longer, for a quota until its period
 * ends, would keep one per grant all day. A later return frees nothing.
 */
export const LEASE_RETURN_GRACE_MS = 600_000;

/** Sweep expired records once the ledger has grown this much past its size after the last sweep. */
const SWEEP_SLACK = 256;

/**
 * The memory store's lease records, by pool, key and lease id; the Redis
 * store keeps the same record as one expiring string per lease (see
 * lua/lease-return.ts). Taking a record consumes it, which makes returns
 * idempotent.
 */
export class LeaseLedger {
  private readonly records = new Map<string, LeaseRecord>();
  /** Per key, the last grant seq when the provider's count last corrected its windows. */
  private readonly correctedAtSeq = new Map<string, number>();
  private sweepAtSize = SWEEP_SLACK;

  keep(poolId: string, keyId: string, leaseId: string, record: LeaseRecord, nowMs: number): void {
    if (this.records.size >= this.sweepAtSize) {
      for (const [id, kept] of this.records) if (kept.keptUntilMs <= nowMs) this.records.delete(id);
      this.sweepAtSize = this.records.size * 2 + SWEEP_SLACK;
    }
    this.records.set(ledgerId(poolId, keyId, leaseId), record);
  }

  /**
   * The provider's remaining count just topped up the key's windows with
   * admissions it saw and this store did not, reckoned with the slots
   * leased so far as spent: giving those slots back would free room the
   * provider no longer has, so they stay in the windows.
   */
  corrected(poolId: string, keyId: string, seq: number): void {
    this.correctedAtSeq.set(ledgerId(poolId, keyId, ''), seq);
  }

  /** Whether the lease's slots may leave the windows (see corrected). */
  windowsReturnable(poolId: string, keyId: string, record: LeaseRecord): boolean {
    return record.seq > (this.correctedAtSeq.get(ledgerId(poolId, keyId, '')) ?? 0);
  }

  /** The lease's record, removed; undefined when unknown, already returned or no longer counted anywhere. */
  take(poolId: string, keyId: string, leaseId: string, nowMs: number): LeaseRecord | undefined {
    const id = ledgerId(poolId, keyId, leaseId);
    const record = this.records.get(id);
    if (record === undefined) return undefined;
    this.records.delete(id);
    return record.keptUntilMs > nowMs ? record : undefined;
  }
}

function ledgerId(poolId: string, keyId: string, leaseId: string): string {
  return `${poolId}\u0000${keyId}\u0000${leaseId}`;
}
