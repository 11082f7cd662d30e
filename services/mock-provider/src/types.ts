/** At most `requests` requests and/or `tokens` tokens in any interval of `perMs` (a sliding window log). */
export interface WindowLimit {
  requests?: number;
  tokens?: number;
  perMs: number;
}

export interface MockKeyOptions {
  /** The API key clients send as `Authorization: Bearer <secret>`. */
  secret: string;
  /** None means unlimited. */
  limits?: WindowLimit[];
  /** Admitted requests before the key answers 429 insufficient_quota forever. */
  quotaRequests?: number;
  /**
   * Enforce `limits` but send no x-ratelimit-* headers on admitted requests,
   * like OpenAI-compatible servers that only speak up with a 429.
   */
  silentLimits?: boolean;
}

export interface MockFailures {
  /** 0..1 probability of answering 503 with an OpenAI server_error body. */
  errorRate?: number;
  /** 0..1 probability of never answering; the socket stays open until the client gives up. */
  hangRate?: number;
  /** Streams: destroy the socket after this many content chunks. */
  cutStreamAfterChunks?: number;
}

export interface MockProviderOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
  keys: MockKeyOptions[];
  /** Delay before an admitted non-stream response or before stream headers. Default 0. */
  latencyMs?: number;
  /** Content chunks per stream. Default 8. */
  streamChunks?: number;
  /** Delay between stream chunks. Default 0. */
  streamChunkDelayMs?: number;
  failures?: MockFailures;
  /** Clock for limits and `created`, in ms. Default Date.now. */
  now?: () => number;
}

export interface MockKeyStats {
  requests: number;
  ok: number;
  rateLimited: number;
  unauthorized: number;
  quotaExceeded: number;
  failed: number;
}

export interface MockProvider {
  /** Base URL including /v1, e.g. http://127.0.0.1:41234/v1. */
  readonly url: string;
  readonly port: number;
  /** Counters of one key (by secret, or by its index in `keys` as a decimal string), or totals. */
  stats(secretOrIndex?: string): MockKeyStats;
  resetStats(): void;
  /** From now on the key answers 401 invalid_api_key. */
  revokeKey(secret: string): void;
  /** Replaces the key's windows; the new windows start empty. */
  setKeyLimits(secret: string, limits: WindowLimit[] | undefined): void;
  setFailures(failures: MockFailures): void;
  setLatency(latencyMs: number): void;
  /** Closes the server and destroys every open socket, hung ones included. */
  close(): Promise<void>;
}
