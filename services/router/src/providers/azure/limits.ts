import type { LimitSnapshot } from '../adapter';
import { countHeader, parseRetryAfter, type Headers } from '../limit-headers';

/**
 * Azure OpenAI: only x-ratelimit-remaining-{requests,tokens} (no limit, no
 * reset), and retry-after-ms / retry-after on a 429. With no limit stated, a
 * key's limit can't be learned from Azure's headers alone; the remaining
 * count still corrects the limiter's view.
 */
export function readAzureLimits(headers: Headers, nowMs: number): LimitSnapshot {
  return {
    limitRequests: undefined,
    remainingRequests: countHeader(headers, 'x-ratelimit-remaining-requests'),
    limitTokens: undefined,
    remainingTokens: countHeader(headers, 'x-ratelimit-remaining-tokens'),
    requestsResetAtMs: undefined,
    tokensResetAtMs: undefined,
    inputTokens: undefined,
    outputTokens: undefined,
    retryAfterMs: parseRetryAfter(headers, nowMs),
  };
}
