/** gRPC status codes; numbering is the wire's. */
export enum Code {
  Ok = 0,
  Cancelled = 1,
  Unknown = 2,
  InvalidArgument = 3,
  DeadlineExceeded = 4,
  NotFound = 5,
  AlreadyExists = 6,
  PermissionDenied = 7,
  ResourceExhausted = 8,
  FailedPrecondition = 9,
  Aborted = 10,
  OutOfRange = 11,
  Unimplemented = 12,
  Internal = 13,
  Unavailable = 14,
  DataLoss = 15,
  Unauthenticated = 16,
}

/**
 * Machine-readable reasons (google.rpc.ErrorInfo.reason). Callers branch on
 * these, so they are stable; the message is for people.
 */
export const Reason = {
  INVALID_REQUEST: 'INVALID_REQUEST',
  BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  ROUTE_NOT_FOUND: 'ROUTE_NOT_FOUND',
  NOT_FOUND: 'NOT_FOUND',
  KEY_POOL_EXHAUSTED: 'KEY_POOL_EXHAUSTED',
  KEY_POOL_UNAVAILABLE: 'KEY_POOL_UNAVAILABLE',
  /** A tenant's or route's own limit (not the keys') is reached; metadata.scope says which. */
  SCOPE_LIMIT_EXCEEDED: 'SCOPE_LIMIT_EXCEEDED',
  PROVIDER_UNAVAILABLE: 'PROVIDER_UNAVAILABLE',
  PROVIDER_ERROR: 'PROVIDER_ERROR',
  PROVIDER_REJECTED: 'PROVIDER_REJECTED',
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  CANCELLED: 'CANCELLED',
  INVALID_CONFIG: 'INVALID_CONFIG',
  UNAVAILABLE: 'UNAVAILABLE',
  INTERNAL: 'INTERNAL',
} as const;
export type ReasonName = (typeof Reason)[keyof typeof Reason];

export interface KeymeshErrorInit {
  code: Code;
  reason: ReasonName | string;
  message: string;
  /** When waiting this long is likely to help; becomes RetryInfo / retry-after. */
  retryAfterMs?: number;
  /** Non-secret facts for the caller (ErrorInfo.metadata), e.g. { route: "gpt-4o-mini" }. */
  metadata?: Record<string, string>;
  /** Logged, never sent. */
  cause?: unknown;
  /** The HTTP status a provider answered with, when the error is the provider's. */
  upstreamStatus?: number;
}

/** The one error type keymesh code throws. */
export class KeymeshError extends Error {
  readonly code: Code;
  readonly reason: string;
  readonly retryAfterMs: number | undefined;
  readonly metadata: Readonly<Record<string, string>>;
  readonly upstreamStatus: number | undefined;

  constructor(init: KeymeshErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'KeymeshError';
    this.code = init.code;
    this.reason = init.reason;
    this.retryAfterMs = init.retryAfterMs;
    this.metadata = init.metadata ?? {};
    this.upstreamStatus = init.upstreamStatus;
  }

  /** A request the caller must fix (HTTP 400); `param` names the field or header at fault. */
  static invalidRequest(message: string, param?: string): KeymeshError {
    return new KeymeshError({ code: Code.InvalidArgument, reason: Reason.INVALID_REQUEST, message, ...(param === undefined ? {} : { metadata: { param } }) });
  }

  /**
   * Normalizes anything thrown into a KeymeshError. Unknown errors become
   * INTERNAL with a generic message: their text may hold details (or secrets)
   * the caller must not see, so it stays in `cause` for the log.
   */
  static from(thrown: unknown): KeymeshError {
    if (thrown instanceof KeymeshError) return thrown;
    if (isAbortError(thrown)) {
      return new KeymeshError({
        code: Code.Cancelled,
        reason: Reason.CANCELLED,
        message: 'the request was cancelled',
        cause: thrown,
      });
    }
    return new KeymeshError({
      code: Code.Internal,
      reason: Reason.INTERNAL,
      message: 'internal error',
      cause: thrown,
    });
  }
}

function isAbortError(thrown: unknown): boolean {
  return thrown instanceof Error && (thrown.name === 'AbortError' || thrown.name === 'TimeoutError');
}
