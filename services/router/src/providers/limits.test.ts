import assert from 'node:assert/strict';
import { readAnthropicLimits } from './anthropic/limits';
import { readAzureLimits } from './azure/limits';
import { ANTHROPIC_429, ANTHROPIC_OK, AZURE_429, AZURE_OK, OPENAI_429, OPENAI_OK } from './limit-fixtures';
import { parseGoDuration, parseRetryAfter, parseRfc3339Ms } from './limit-headers';
import { readOpenAiLimits } from './openai/limits';

const NOW = Date.UTC(2024, 4, 1, 12, 0, 0);

describe('provider rate-limit headers', () => {
  describe('retry-after', () => {
    it('reads whole seconds', () => {
      assert.equal(parseRetryAfter({ 'retry-after': '7' }, NOW), 7000);
      assert.equal(parseRetryAfter({ 'retry-after': '0' }, NOW), 0);
    });

    it('reads an HTTP date relative to now, and a date already past as now', () => {
      assert.equal(parseRetryAfter({ 'retry-after': 'Wed, 01 May 2024 12:00:30 GMT' }, NOW), 30_000);
      assert.equal(parseRetryAfter({ 'retry-after': 'Wed, 01 May 2024 11:59:00 GMT' }, NOW), 0);
    });

    it('prefers retry-after-ms, keeping its fraction', () => {
      assert.equal(parseRetryAfter({ 'retry-after-ms': '19500.5', 'retry-after': '20' }, NOW), 19_500.5);
    });

    it('ignores what is neither seconds nor a date', () => {
      assert.equal(parseRetryAfter({ 'retry-after': 'soon' }, NOW), undefined);
      assert.equal(parseRetryAfter({ 'retry-after': '-3' }, NOW), undefined);
      assert.equal(parseRetryAfter({ 'retry-after': '' }, NOW), undefined);
      assert.equal(parseRetryAfter({}, NOW), undefined);
    });
  });

  it('reads Go durations and RFC 3339 times, rejecting anything else', () => {
    assert.equal(parseGoDuration('6m0s'), 360_000);
    assert.equal(parseGoDuration('1h2m3.5s'), 3_723_500);
    assert.equal(parseGoDuration('20ms'), 20);
    assert.equal(parseGoDuration('6 minutes'), undefined);
    assert.equal(parseRfc3339Ms('2024-05-01T12:00:01.5Z'), NOW + 1500);
    assert.equal(parseRfc3339Ms('2024-05-01T14:00:00+02:00'), NOW);
    assert.equal(parseRfc3339Ms('2024-05-01T12:00:00'), undefined, 'no time zone: ambiguous');
    assert.equal(parseRfc3339Ms('tomorrow'), undefined);
  });

  it('reads OpenAI headers into a snapshot', () => {
    assert.deepEqual(readOpenAiLimits(OPENAI_OK.headers, OPENAI_OK.atMs), {
      limitRequests: 10_000,
      remainingRequests: 9_999,
      limitTokens: 2_000_000,
      remainingTokens: 1_999_976,
      requestsResetAtMs: NOW + 6,
      tokensResetAtMs: NOW,
      inputTokens: undefined,
      outputTokens: undefined,
      retryAfterMs: undefined,
    });
    const refused = readOpenAiLimits(OPENAI_429.headers, OPENAI_429.atMs);
    assert.equal(refused.remainingRequests, 0);
    assert.equal(refused.requestsResetAtMs, NOW + 360_000);
    assert.equal(refused.retryAfterMs, 19_500.5);
  });

  it('reads Anthropic headers into a snapshot, with absolute resets and input/output token limits', () => {
    assert.deepEqual(readAnthropicLimits(ANTHROPIC_OK.headers, ANTHROPIC_OK.atMs), {
      limitRequests: 50,
      remainingRequests: 49,
      requestsResetAtMs: NOW + 1000,
      limitTokens: 80_000,
      remainingTokens: 79_000,
      tokensResetAtMs: NOW + 750,
      inputTokens: { limit: 40_000, remaining: 39_500, resetAtMs: NOW + 1500 },
      outputTokens: { limit: 8_000, remaining: 7_500, resetAtMs: NOW + 6000 },
      retryAfterMs: undefined,
    });
    const refused = readAnthropicLimits(ANTHROPIC_429.headers, ANTHROPIC_429.atMs);
    assert.equal(refused.remainingRequests, 0);
    assert.equal(refused.requestsResetAtMs, NOW + 12_000);
    assert.equal(refused.retryAfterMs, 12_000);
    assert.equal(refused.inputTokens, undefined);
  });

  it('reads Azure OpenAI headers: remaining counts and retry-after-ms, no limit', () => {
    const ok = readAzureLimits(AZURE_OK.headers, AZURE_OK.atMs);
    assert.equal(ok.limitRequests, undefined);
    assert.equal(ok.remainingRequests, 119);
    assert.equal(ok.remainingTokens, 119_480);
    assert.equal(ok.retryAfterMs, undefined);
    assert.equal(readAzureLimits(AZURE_429.headers, AZURE_429.atMs).retryAfterMs, 1234);
  });

  it('treats malformed counts as unsaid rather than as zero', () => {
    const snapshot = readOpenAiLimits({ 'x-ratelimit-remaining-requests': 'lots', 'x-ratelimit-limit-requests': '-1' }, NOW);
    assert.equal(snapshot.remainingRequests, undefined);
    assert.equal(snapshot.limitRequests, undefined);
  });
});
