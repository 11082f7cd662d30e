import { Code, KeymeshError } from './keymesh-error';

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}
export interface AnthropicErrorBody {
  type: 'error';
  error: { type: string; message: string };
}

export interface HttpError {
  status: number;
  /** Whole seconds, rounded up; present when waiting helps. */
  retryAfterSeconds: number | undefined;
  openAiType: string;
  anthropicType: string;
}

// The one table from error code to what an HTTP caller sees. OpenAI SDKs branch
// on status; their `type` strings follow OpenAI's documented error types.
const HTTP_BY_CODE: Record<Code, { status: number; openAiType: string; anthropicType: string }> = {
  [Code.Ok]: { status: 200, openAiType: 'ok', anthropicType: 'ok' },
  [Code.Cancelled]: { status: 499, openAiType: 'request_cancelled', anthropicType: 'api_error' },
  [Code.Unknown]: { status: 500, openAiType: 'server_error', anthropicType: 'api_error' },
  [Code.InvalidArgument]: { status: 400, openAiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  [Code.DeadlineExceeded]: { status: 504, openAiType: 'timeout_error', anthropicType: 'timeout_error' },
  [Code.NotFound]: { status: 404, openAiType: 'invalid_request_error', anthropicType: 'not_found_error' },
  [Code.AlreadyExists]: { status: 409, openAiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  [Code.PermissionDenied]: { status: 403, openAiType: 'permission_error', anthropicType: 'permission_error' },
  [Code.ResourceExhausted]: { status: 429, openAiType: 'rate_limit_error', anthropicType: 'rate_limit_error' },
  [Code.FailedPrecondition]: { status: 400, openAiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  [Code.Aborted]: { status: 409, openAiType: 'server_error', anthropicType: 'api_error' },
  [Code.OutOfRange]: { status: 400, openAiType: 'invalid_request_error', anthropicType: 'invalid_request_error' },
  [Code.Unimplemented]: { status: 501, openAiType: 'invalid_request_error', anthropicType: 'api_error' },
  [Code.Internal]: { status: 500, openAiType: 'server_error', anthropicType: 'api_error' },
  [Code.Unavailable]: { status: 503, openAiType: 'server_error', anthropicType: 'overloaded_error' },
  [Code.DataLoss]: { status: 500, openAiType: 'server_error', anthropicType: 'api_error' },
  [Code.Unauthenticated]: { status: 401, openAiType: 'authentication_error', anthropicType: 'authentication_error' },
};

// Reasons whose HTTP status differs from their code's.
const HTTP_STATUS_BY_REASON: Record<string, number> = {
  BODY_TOO_LARGE: 413,
  PROVIDER_ERROR: 502,
  PROVIDER_UNAVAILABLE: 503,
};

export function toHttpError(err: KeymeshError): HttpError {
  const row = HTTP_BY_CODE[err.code] ?? HTTP_BY_CODE[Code.Internal];
  return {
    status: HTTP_STATUS_BY_REASON[err.reason] ?? row.status,
    retryAfterSeconds: err.retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(err.retryAfterMs / 1000)),
    openAiType: row.openAiType,
    anthropicType: row.anthropicType,
  };
}

// Where OpenAI has its own code for the same condition, SDK users expect it.
const OPENAI_CODE_BY_REASON: Record<string, string> = {
  ROUTE_NOT_FOUND: 'model_not_found',
  UNAUTHENTICATED: 'invalid_api_key',
  KEY_POOL_EXHAUSTED: 'rate_limit_exceeded',
  SCOPE_LIMIT_EXCEEDED: 'rate_limit_exceeded',
};

export function openAiErrorBody(err: KeymeshError, param: string | null = null): OpenAiErrorBody {
  return {
    error: {
      message: err.message,
      type: toHttpError(err).openAiType,
      param,
      // A provider's own code for a request it rejected goes through as it is.
      code: err.metadata.provider_code ?? OPENAI_CODE_BY_REASON[err.reason] ?? err.reason.toLowerCase(),
    },
  };
}

export function anthropicErrorBody(err: KeymeshError): AnthropicErrorBody {
  return { type: 'error', error: { type: toHttpError(err).anthropicType, message: err.message } };
}
