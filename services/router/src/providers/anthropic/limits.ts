import type { LimitSnapshot, LimitWindowSnapshot } from '../adapter';
import { countHeader, header, parseRetryAfter, parseRfc3339Ms, type Headers } from '../limit-headers';

function windowOf(headers: Headers, dimension: string): LimitWindowSnapshot | undefined {
  const prefix = `anthropic-ratelimit-${dimension}`;
  const snapshot = {
    limit: countHeader(headers, `${prefix}-limit`),
    remaining: countHeader(headers, `${prefix}-remaining`),
    resetAtMs: parseRfc3339Ms(header(headers, `${prefix}-reset`)),
  };
  return snapshot.limit === undefined && snapshot.remaining === undefined && snapshot.resetAtMs === undefined ? undefined : snapshot;
}

/**
 * Anthropic: anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
 * {limit,remaining,reset}, resets as RFC 3339 times (absolute, unlike
 * OpenAI's durations), and retry-after in seconds on a 429. "tokens" is the
 * most restrictive of the token limits, so it fills the shared token fields.
 */
export function readAnthropicLimits(headers: Headers, nowMs: number): LimitSnapshot {
  const requests = windowOf(headers, 'requests');
  const tokens = windowOf(headers, 'tokens');
  return {
    limitRequests: requests?.limit,
    remainingRequests: requests?.remaining,
    requestsResetAtMs: requests?.resetAtMs,
    limitTokens: tokens?.limit,
    remainingTokens: tokens?.remaining,
    tokensResetAtMs: tokens?.resetAtMs,
    inputTokens: windowOf(headers, 'input-tokens'),
    outputTokens: windowOf(headers, 'output-tokens'),
    retryAfterMs: parseRetryAfter(headers, nowMs),
  };
}
