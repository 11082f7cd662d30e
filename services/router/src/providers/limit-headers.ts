/**
 * Header reading shared by every provider's limits.ts: the pieces of rate-limit
 * headers that are the same whoever sends them (retry-after, numbers, dates).
 * Pure: time comes in as nowMs.
 */

export type Headers = Record<string, string | string[] | undefined>;

/** The first value of a header (Node joins most repeats, but not every kind). */
export function header(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** A non-negative integer header (a count of requests or tokens); undefined when absent or not one. */
export function countHeader(headers: Headers, name: string): number | undefined {
  const text = header(headers, name);
  if (text === undefined || text.trim() === '') return undefined;
  const value = Number(text);
  return Number.isInteger(value) && value >= 0 ? value : undefined;
}

/**
 * When to retry, in ms from nowMs: `retry-after-ms` (OpenAI, Azure OpenAI;
 * fractional ms) wins when present, else `retry-after` as whole seconds or an
 * HTTP date (RFC 9110). A date in the past means now (0).
 */
export function parseRetryAfter(headers: Headers, nowMs: number): number | undefined {
  const msText = header(headers, 'retry-after-ms');
  if (msText !== undefined && msText.trim() !== '') {
    const ms = Number(msText);
    if (Number.isFinite(ms) && ms >= 0) return ms;
  }
  const text = header(headers, 'retry-after');
  if (text === undefined || text.trim() === '') return undefined;
  const seconds = Number(text);
  if (Number.isFinite(seconds)) return seconds >= 0 ? seconds * 1000 : undefined;
  return parseHttpDateMs(text, nowMs);
}

/** An HTTP date (IMF-fixdate, or the obsolete forms Date.parse reads) as ms from nowMs, floored at 0. */
function parseHttpDateMs(text: string, nowMs: number): number | undefined {
  // Date.parse also takes bare numbers and ISO strings; an HTTP date names a weekday or month.
  if (!/[A-Za-z]{3}/.test(text)) return undefined;
  const atMs = Date.parse(text);
  return Number.isNaN(atMs) ? undefined : Math.max(0, atMs - nowMs);
}

/**
 * An RFC 3339 timestamp (Anthropic's reset headers: "2024-05-01T12:00:30Z")
 * as epoch ms; undefined when the text is not one (no time zone, garbage).
 */
export function parseRfc3339Ms(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(text.trim())) return undefined;
  const atMs = Date.parse(text.trim());
  return Number.isNaN(atMs) ? undefined : atMs;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * OpenAI's reset headers are Go durations: "6m0s", "1s", "20ms", "1h2m3.5s".
 * Returns ms, or undefined when the text is not one.
 */
export function parseGoDuration(text: string | undefined): number | undefined {
  if (!text) return undefined;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  for (let match = re.exec(text); match; match = re.exec(text)) {
    total += Number(match[1]) * UNIT_MS[match[2]];
    consumed += match[0].length;
  }
  return consumed === text.length && consumed > 0 ? total : undefined;
}
