/** When a key's provider quota starts afresh: the first day of each month, or each day, at midnight in `timeZone`. */
export interface QuotaResets {
  readonly period: 'monthly' | 'daily';
  /** An IANA time zone, e.g. "UTC", "America/Los_Angeles". */
  readonly timeZone: string;
}

/** OpenAI's billing quotas renew with the calendar month, in UTC unless the account says otherwise. */
export const DEFAULT_QUOTA_RESETS: QuotaResets = Object.freeze({ period: 'monthly', timeZone: 'UTC' });

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterOf(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (formatter === undefined) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric',
    });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

/** True when the runtime knows the time zone (Intl throws a RangeError otherwise). */
export function isKnownTimeZone(timeZone: string): boolean {
  try {
    formatterOf(timeZone);
    return true;
  } catch {
    return false;
  }
}

/** The wall-clock fields of an instant in a time zone. */
function wallClock(ms: number, timeZone: string): { year: number; month: number; day: number; hour: number; minute: number; second: number } {
  const parts: Record<string, number> = {};
  for (const part of formatterOf(timeZone).formatToParts(new Date(ms))) {
    if (part.type !== 'literal') parts[part.type] = Number(part.value);
  }
  return { year: parts['year']!, month: parts['month']!, day: parts['day']!, hour: parts['hour']!, minute: parts['minute']!, second: parts['second']! };
}

/** The zone's offset from UTC at an instant, in ms (east positive). */
function offsetMs(ms: number, timeZone: string): number {
  const w = wallClock(ms, timeZone);
  return Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second) - (ms - (((ms % 1000) + 1000) % 1000));
}

/** The instant a wall-clock midnight happens in a zone (the offset can differ either side of a DST change, so settle it twice). */
function midnightIn(year: number, monthIndex: number, day: number, timeZone: string): number {
  const wall = Date.UTC(year, monthIndex, day);
  let ms = wall - offsetMs(wall, timeZone);
  ms = wall - offsetMs(ms, timeZone);
  return ms;
}

/**
 * The first instant after nowMs at which the quota period starts again: the
 * next local midnight (daily) or the next first-of-the-month midnight
 * (monthly) in the period's time zone. Pure: time comes in as nowMs.
 */
export function nextQuotaResetMs(nowMs: number, resets: QuotaResets): number {
  const w = wallClock(nowMs, resets.timeZone);
  const next =
    resets.period === 'daily'
      ? midnightIn(w.year, w.month - 1, w.day + 1, resets.timeZone)
      : midnightIn(w.year, w.month, 1, resets.timeZone);
  return next > nowMs ? next : nowMs + 1;
}
