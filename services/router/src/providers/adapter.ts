import type { OpenAiChatChunk, OpenAiChatRequest, OpenAiChatResponse, OpenAiEmbeddingRequest, OpenAiEmbeddingResponse, OpenAiUsage } from './openai/types';

export type ProviderKind = 'openai';

/** An HTTP request to a provider, relative to its base URL. */
export interface ProviderHttpRequest {
  path: string;
  headers: Record<string, string>;
  body: string | Buffer;
}

/** One dimension of a provider's rate limit, as its headers state it; undefined where they say nothing. */
export interface LimitWindowSnapshot {
  readonly limit: number | undefined;
  readonly remaining: number | undefined;
  /** Absolute epoch ms when the dimension is whole again. */
  readonly resetAtMs: number | undefined;
}

/**
 * What a provider's headers say about a key's capacity, one shape for every
 * provider (OpenAI x-ratelimit-*, Anthropic anthropic-ratelimit-*, Azure
 * OpenAI), so the router learns limits without knowing whose headers they were.
 */
export interface LimitSnapshot {
  limitRequests: number | undefined;
  remainingRequests: number | undefined;
  limitTokens: number | undefined;
  remainingTokens: number | undefined;
  /** Absolute epoch ms. */
  requestsResetAtMs: number | undefined;
  tokensResetAtMs: number | undefined;
  /** Providers that limit input and output tokens apart (Anthropic). */
  inputTokens: LimitWindowSnapshot | undefined;
  outputTokens: LimitWindowSnapshot | undefined;
  /** From retry-after / retry-after-ms. */
  retryAfterMs: number | undefined;
}

export type FailureKind =
  /** Rate limited: cool the key, try another. */
  | 'rate_limited'
  /** Spent quota: park the key until its period ends. */
  | 'quota_exhausted'
  /** The key is invalid or revoked: park it. */
  | 'unauthorized'
  /** The provider is unwell (5xx, timeout): another key or target may work. */
  | 'unavailable'
  /** The request itself is wrong: no other key would help; the caller gets it. */
  | 'rejected';

export interface ProviderFailure {
  kind: FailureKind;
  status: number;
  /** The provider's message with nothing secret in it, for the caller. */
  message: string;
  retryAfterMs: number | undefined;
  /** A rejected request's own error code and param from the provider (e.g. context_length_exceeded, messages), for the caller. */
  code?: string;
  param?: string;
}

/** A provider's wire format. Adapters are pure: no I/O, time passed in. */
export interface ProviderAdapter {
  readonly kind: ProviderKind;
  /** `rawBody` is the caller's bytes, passed through untouched when the model is unchanged. */
  chatRequest(req: OpenAiChatRequest, rawBody: Buffer | undefined, model: string, secret: string): ProviderHttpRequest;
  chatResponse(body: unknown): OpenAiChatResponse;
  /** Usage from one SSE data payload, when that event carries it. */
  streamUsage(data: string): OpenAiUsage | undefined;
  streamChunk(data: string): OpenAiChatChunk | undefined;
  embeddingRequest(req: OpenAiEmbeddingRequest, rawBody: Buffer | undefined, model: string, secret: string): ProviderHttpRequest;
  embeddingResponse(body: unknown): OpenAiEmbeddingResponse;
  readLimits(headers: Record<string, string | string[] | undefined>, nowMs: number): LimitSnapshot;
  classify(status: number, headers: Record<string, string | string[] | undefined>, body: unknown): ProviderFailure;
}
