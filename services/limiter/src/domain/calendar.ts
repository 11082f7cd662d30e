import type { QuotaPeriod } from './types';

/** One calendar period [startMs, endMs) of a time zone. */
export interface CalendarPeriod {
  readonly startMs: number;
  readonly endMs: number;
}

const HOUR_MS = 3_600_000;

/** formatToParts is the slow part (microseconds); one formatter per zone, built once. */
const formatters = new Map<string, Intl.DateTimeFormat>();

/** The current period per (period, zone): most calls fall in the one computed last. */
const lastPeriods = new Map<string, CalendarPeriod>();

/**
 * The calendar day or month of `timeZone` that contains nowMs: it starts at
 * the zone's local midnight (of the 1st for a month) and ends at the next
 * one, so a day is 23 or 25 hours long across a DST change.
 */
export function calendarPeriodAt(nowMs: number, period: QuotaPeriod, timeZone: string): CalendarPeriod {
  const cacheKey = `${period}@${timeZone}`;
  const last = lastPeriods.get(cacheKey);
  if (last !== undefined && nowMs >= last.startMs && nowMs < last.endMs) return last;
  const local = localDateOf(nowMs, timeZone);
  const current = period === 'day' ? local : { year: local.year, month: local.month, day: 1 };
  const next = period === 'day' ? addDays(current, 1) : addMonths(current, 1);
  const found = Object.freeze({ startMs: startOfLocalDay(current, timeZone), endMs: startOfLocalDay(next, timeZone) });
  lastPeriods.set(cacheKey, found);
  return found;
}

interface LocalDate {
  readonly year: number;
  readonly month: number;
  readonly day: number;
}

function formatterOf(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (formatter === undefined) {
    formatter = new Intl.DateTimeFormat('en-US', { timeZone, year: 'numeric', month: 'numeric', day: 'numeric', hourCycle: 'h23' });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

function localDateOf(atMs: number, timeZone: string): LocalDate {
  let year = 0;
  let month = 0;
  let day = 0;
  for (const part of formatterOf(timeZone).formatToParts(atMs)) {
    if (part.type === 'year') year = Number(part.value);
    else if (part.type === 'month') month = Number(part.value);
    else if (part.type === 'day') day = Number(part.value);
  }
  return { year, month, day };
}

function compareDates(a: LocalDate, b: LocalDate): number {
  return a.year - b.year || a.month - b.month || a.day - b.day;
}

function addDays(date: LocalDate, days: number): LocalDate {
  const d = new Date(Date.UTC(date.year, date.month - 1, date.day + days));
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
}

function addMonths(date: LocalDate, months: number): LocalDate {
  const d = new Date(Date.UTC(date.year, date.month - 1 + months, 1));
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: 1 };
}

/**
 * The first instant whose local date in `timeZone` is `date`. Offsets are
 * within ±14 h of UTC, so that instant lies within a day of the date's UTC
 * midnight; a binary search over local dates (which only move forward with
 * time) finds it to the millisecond, including zones whose DST change skips
 * midnight itself (the day then starts at 01:00).
 */
function startOfLocalDay(date: LocalDate, timeZone: string): number {
  const utcMidnightMs = Date.UTC(date.year, date.month - 1, date.day);
  let lo = utcMidnightMs - 15 * HOUR_MS;
  let hi = utcMidnightMs + 15 * HOUR_MS;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (compareDates(localDateOf(mid, timeZone), date) >= 0) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** Whether Intl knows the zone (an IANA name such as "Europe/Berlin", or "UTC"). */
export function isKnownTimeZone(timeZone: string): boolean {
  try {
    formatterOf(timeZone);
    return true;
  } catch {
    return false;
  }
}
