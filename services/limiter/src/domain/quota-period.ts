import { calendarPeriodAt } from './calendar';

/** When a key's provider quota starts afresh: the first day of each month, or each day, at midnight in `timeZone`. */
export interface QuotaResets {
  readonly period: 'monthly' | 'daily';
  /** An IANA time zone, e.g. "UTC", "America/Los_Angeles". */
  readonly timeZone: string;
}

/** OpenAI's billing quotas renew with the calendar month, in UTC unless the account says otherwise. */
export const DEFAULT_QUOTA_RESETS: QuotaResets = Object.freeze({ period: 'monthly', timeZone: 'UTC' });

/**
 * The first instant after nowMs at which the quota period starts again: the
 * end of the calendar day or month of the period's time zone that holds
 * nowMs (so a boundary itself already belongs to the new period).
 */
export function nextQuotaResetMs(nowMs: number, resets: QuotaResets): number {
  return calendarPeriodAt(nowMs, resets.period === 'daily' ? 'day' : 'month', resets.timeZone).endMs;
}
