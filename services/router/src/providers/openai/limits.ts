import type { LimitSnapshot } from '../adapter';
import { countHeader, header, parseGoDuration, parseRetryAfter, type Headers } from '../limit-headers';

export { parseGoDuration as parseResetDuration, parseRetryAfter } from '../limit-headers';

/**
 * OpenAI: x-ratelimit-{limit,remaining,reset}-{requests,tokens}, resets as Go
 * durations from now ("6m0s", "20ms"), plus retry-after(-ms) on a 429.
 */
export function readOpenAiLimits(headers: Headers, nowMs: number): LimitSnapshot {
  const requestsReset = parseGoDuration(header(headers, 'x-ratelimit-reset-requests'));
  const tokensReset = parseGoDuration(header(headers, 'x-ratelimit-reset-tokens'));
  return {
    limitRequests: countHeader(headers, 'x-ratelimit-limit-requests'),
    remainingRequests: countHeader(headers, 'x-ratelimit-remaining-requests'),
    limitTokens: countHeader(headers, 'x-ratelimit-limit-tokens'),
    remainingTokens: countHeader(headers, 'x-ratelimit-remaining-tokens'),
    requestsResetAtMs: requestsReset === undefined ? undefined : nowMs + requestsReset,
    tokensResetAtMs: tokensReset === undefined ? undefined : nowMs + tokensReset,
    inputTokens: undefined,
    outputTokens: undefined,
    retryAfterMs: parseRetryAfter(headers, nowMs),
  };
}
