import { calendarPeriodAt, type CalendarPeriod } from '../domain/calendar';
import type { CalendarQuota } from '../domain/types';

/**
 * One calendar quota of a key: a count per period start. Fixed periods need
 * no log: what counts is only the period an admission was made in. At most
 * two periods are held, the current one and the next while a lease's hold
 * reaches past midnight; earlier ones are dropped when the count moves on.
 */
export class QuotaCounter {
  private readonly usedByStartMs = new Map<number, number>();

  constructor(readonly quota: CalendarQuota) {}

  periodAt(atMs: number): CalendarPeriod {
    return calendarPeriodAt(atMs, this.quota.period, this.quota.timeZone);
  }

  usedAt(atMs: number): number {
    return this.usedByStartMs.get(this.periodAt(atMs).startMs) ?? 0;
  }

  remainingAt(atMs: number): number {
    return Math.max(0, this.quota.limit - this.usedAt(atMs));
  }

  /** Counts `amount` in the period of atMs (now, or a lease's hold end), forgetting periods over before nowMs's. */
  add(nowMs: number, atMs: number, amount: number): void {
    const currentStartMs = this.periodAt(nowMs).startMs;
    for (const heldMs of this.usedByStartMs.keys()) if (heldMs < currentStartMs) this.usedByStartMs.delete(heldMs);
    const startMs = this.periodAt(atMs).startMs;
    this.usedByStartMs.set(startMs, (this.usedByStartMs.get(startMs) ?? 0) + amount);
  }

  /** Gives back up to `amount` in the period of atMs; nothing once that period has been dropped. */
  refund(atMs: number, amount: number): void {
    const startMs = this.periodAt(atMs).startMs;
    const used = this.usedByStartMs.get(startMs);
    if (used !== undefined) this.usedByStartMs.set(startMs, Math.max(0, used - amount));
  }

  /** Carries what was spent into a changed config of the same calendar. */
  seedFrom(source: QuotaCounter): void {
    for (const [startMs, used] of source.usedByStartMs) this.usedByStartMs.set(startMs, used);
  }
}

/**
 * Admission ids name a reservation for settles. A key with token quotas
 * appends its stamp ("<seq>@<stampMs>"), so a settle finds the period the
 * tokens were counted in without a per-reservation record; the router treats
 * ids as opaque.
 */
export function admissionIdOf(seq: number, stampMs: number | undefined): string {
  return stampMs === undefined ? String(seq) : `${String(seq)}@${String(stampMs)}`;
}

export function parseAdmissionId(admissionId: string): { readonly seq: number; readonly stampMs: number | undefined } {
  const at = admissionId.indexOf('@');
  if (at < 0) return { seq: Number(admissionId), stampMs: undefined };
  return { seq: Number(admissionId.slice(0, at)), stampMs: Number(admissionId.slice(at + 1)) };
}
