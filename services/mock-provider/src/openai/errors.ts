import type { Rejection } from '../limits/sliding-window';
import { formatGoDuration } from '../limits/duration';

/** OpenAI's error envelope. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** A request the provider refuses to read further, and the parameter to blame. */
export interface BadRequest {
  message: string;
  param: string;
}

export function isBadRequest<T extends object>(plan: T | BadRequest): plan is BadRequest {
  return 'param' in plan;
}

export function badRequestBody(bad: BadRequest): string {
  return errorBody(bad.message, 'invalid_request_error', null, bad.param);
}

export function errorBody(message: string, type: string, code: string | null, param: string | null = null): string {
  const body: OpenAIErrorBody = { error: { message, type, param, code } };
  return JSON.stringify(body);
}

// Bodies that never vary are built once; the key is never echoed, unlike some real providers.
export const INVALID_API_KEY_BODY = errorBody('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key');
export const INSUFFICIENT_QUOTA_BODY = errorBody(
  'You exceeded your current quota, please check your plan and billing details.',
  'insufficient_quota',
  'insufficient_quota',
);
export const SERVER_ERROR_BODY = errorBody(
  'The server had an error while processing your request. Sorry about that! (mock provider injected failure)',
  'server_error',
  null,
);
export const BAD_JSON_BODY = errorBody(
  'We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.',
  'invalid_request_error',
  null,
);
export const BODY_TOO_LARGE_BODY = errorBody('Request body too large.', 'invalid_request_error', null);
export const INTERNAL_ERROR_BODY = errorBody('The mock provider failed to answer.', 'server_error', null);

export function rateLimitBody(rejection: Rejection, model: string): string {
  const { dimension, limit, used, requested, perMs, retryAfterMs } = rejection;
  return errorBody(
    `Rate limit reached for ${dimension} on ${model} (per ${formatGoDuration(perMs)}): ` +
      `Limit ${limit}, Used ${used}, Requested ${requested}. Please try again in ${formatGoDuration(retryAfterMs)}.`,
    dimension,
    'rate_limit_exceeded',
  );
}

export function notFoundBody(method: string, path: string): string {
  return errorBody(`Invalid URL (${method} ${path})`, 'invalid_request_error', null);
}

export function methodNotAllowedBody(method: string, path: string): string {
  return errorBody(`Method ${method} not allowed for ${path}`, 'invalid_request_error', 'method_not_allowed');
}

export function modelNotFoundBody(model: string): string {
  return errorBody(`The model '${model}' does not exist`, 'invalid_request_error', 'model_not_found', 'model');
}
