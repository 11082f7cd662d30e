import type { Dispatcher as UndiciDispatcher } from 'undici';
import type { OpenAiChatRequest, OpenAiChatResponse, OpenAiEmbeddingRequest, OpenAiEmbeddingResponse, OpenAiUsage } from '../providers/openai/types';
import { attr } from '@keymesh/telemetry';
import type { LimitSnapshot } from '../providers';
import type { UpstreamAnswer } from '../providers/upstream';
import type { Attempt, AttemptResult } from './dispatcher';

export interface JsonResult<T> {
  /** The provider's bytes, sent to HTTP callers as they are. */
  readonly bytes: Buffer;
  readonly parsed: T;
  readonly usage: OpenAiUsage | undefined;
}

export interface StreamStart {
  readonly body: AsyncIterable<Buffer>;
  /** Stops reading the provider (the caller left). */
  abort(): void;
}

function parseJson(bytes: Buffer): unknown {
  return parseJsonText(bytes.toString('utf8'));
}

function parseJsonText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** What the provider's rate-limit headers say, read once per response (a few header lookups). */
function limitsOf(a: Attempt, headers: UndiciDispatcher.ResponseData['headers']): LimitSnapshot {
  return a.provider.adapter.readLimits(headers, Date.now());
}

/** When the headers say the key has nothing left, the time it resets. */
function spentUntilMs(limits: LimitSnapshot): number | undefined {
  if (limits.remainingRequests !== 0 && limits.remainingTokens !== 0) return undefined;
  const resets: number[] = [];
  if (limits.remainingRequests === 0 && limits.requestsResetAtMs !== undefined) resets.push(limits.requestsResetAtMs);
  if (limits.remainingTokens === 0 && limits.tokensResetAtMs !== undefined) resets.push(limits.tokensResetAtMs);
  return resets.length > 0 ? Math.max(...resets) : Date.now() + 1_000;
}

function succeeded<T>(a: Attempt, value: T, headers: UndiciDispatcher.ResponseData['headers']): AttemptResult<T> {
  const limits = limitsOf(a, headers);
  return { ok: true, value, spentUntilMs: spentUntilMs(limits), limits };
}

function failureOf(a: Attempt, response: UpstreamAnswer): AttemptResult<never> {
  const failure = a.provider.adapter.classify(response.statusCode, response.headers, parseJsonText(withoutSecret(response.body.toString('utf8'), a.secret)));
  return { ok: false, failure, limits: limitsOf(a, response.headers) };
}

/**
 * A provider's error may quote the key it was sent (an echoed header,
 * "invalid key: ..."), and a rejected request's message, code and param
 * reach the caller. The adapters cut what looks like a key by its shape;
 * the key actually sent is cut first, whatever its shape, so no part of it
 * is left beside a shape-cut prefix.
 */
function withoutSecret(text: string, secret: string): string {
  return secret !== '' && text.includes(secret) ? text.replaceAll(secret, '[redacted]') : text;
}

async function jsonAttempt<T extends { usage?: unknown }>(
  a: Attempt,
  http: { path: string; headers: Record<string, string>; body: string | Buffer },
): Promise<AttemptResult<JsonResult<T>>> {
  const response = await a.provider.upstream.fetch(http.path, http.headers, http.body, a.signal);
  a.span.setAttribute(attr.HTTP_RESPONSE_STATUS_CODE, response.statusCode);
  if (response.statusCode !== 200) return failureOf(a, response);
  const bytes = response.body;
  const parsed = parseJson(bytes) as T | undefined;
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return { ok: false, failure: { kind: 'unavailable', status: 502, message: 'the provider sent a malformed response', retryAfterMs: undefined } };
  }
  return succeeded(a, { bytes, parsed, usage: (parsed.usage as OpenAiUsage | undefined) ?? undefined }, response.headers);
}

export function chatAttempt(req: OpenAiChatRequest, rawBody: Buffer | undefined) {
  return (a: Attempt): Promise<AttemptResult<JsonResult<OpenAiChatResponse>>> =>
    jsonAttempt<OpenAiChatResponse>(a, a.provider.adapter.chatRequest(req, rawBody, a.target.model, a.secret));
}

export function embeddingAttempt(req: OpenAiEmbeddingRequest, rawBody: Buffer | undefined) {
  return (a: Attempt): Promise<AttemptResult<JsonResult<OpenAiEmbeddingResponse>>> =>
    jsonAttempt<OpenAiEmbeddingResponse>(a, a.provider.adapter.embeddingRequest(req, rawBody, a.target.model, a.secret));
}

/**
 * Starts a stream and hands it over once the provider's headers say 200: a
 * failure before that fails over like any request; after it, the bytes belong
 * to the caller. The provider's per-attempt timeout bounds only the wait for
 * those headers: a healthy stream may last longer, and from then on only the
 * request's own end (caller gone, deadline) cuts it.
 */
export function chatStreamAttempt(req: OpenAiChatRequest, rawBody: Buffer | undefined) {
  return async (a: Attempt): Promise<AttemptResult<StreamStart>> => {
    const http = a.provider.adapter.chatRequest(req, rawBody, a.target.model, a.secret);
    const response = await a.provider.upstream.stream(http.path, http.headers, http.body, a.signal, a.requestSignal);
    a.span.setAttribute(attr.HTTP_RESPONSE_STATUS_CODE, response.statusCode);
    if (response.kind === 'answer') return failureOf(a, response);
    return succeeded(a, { body: response.body, abort: response.abort }, response.headers);
  };
}
