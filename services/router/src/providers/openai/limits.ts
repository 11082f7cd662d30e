import type { LimitSnapshot } from '../adapter';

type Headers = Record<string, string | string[] | undefined>;

function header(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * OpenAI's reset headers are Go durations: "6m0s", "1s", "20ms", "1h2m3.5s".
 * Returns ms, or undefined when the text is not one.
 */
export function parseResetDuration(text: string | undefined): number | undefined {
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

/** retry-after is whole seconds or an HTTP date; retry-after-ms (OpenAI) wins when present. */
export function parseRetryAfter(headers: Headers, nowMs: number): number | undefined {
  const ms = Number(header(headers, 'retry-after-ms'));
  if (Number.isFinite(ms) && ms >= 0 && header(headers, 'retry-after-ms') !== undefined) return ms;
  const text = header(headers, 'retry-after');
  if (text === undefined || text === '') return undefined;
  const seconds = Number(text);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

function intHeader(headers: Headers, name: string): number | undefined {
  const text = header(headers, name);
  if (text === undefined) return undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : undefined;
}

export function readOpenAiLimits(headers: Headers, nowMs: number): LimitSnapshot {
  const requestsReset = parseResetDuration(header(headers, 'x-ratelimit-reset-requests'));
  const tokensReset = parseResetDuration(header(headers, 'x-ratelimit-reset-tokens'));
  return {
    remainingRequests: intHeader(headers, 'x-ratelimit-remaining-requests'),
    remainingTokens: intHeader(headers, 'x-ratelimit-remaining-tokens'),
    requestsResetAtMs: requestsReset === undefined ? undefined : nowMs + requestsReset,
    tokensResetAtMs: tokensReset === undefined ? undefined : nowMs + tokensReset,
    retryAfterMs: parseRetryAfter(headers, nowMs),
  };
}
