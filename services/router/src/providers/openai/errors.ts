import type { ProviderFailure } from '../adapter';
import { parseRetryAfter } from './limits';
import type { OpenAiErrorBody } from './types';

type Headers = Record<string, string | string[] | undefined>;

function errorOf(body: unknown): OpenAiErrorBody['error'] {
  if (body && typeof body === 'object' && 'error' in body) {
    const error = (body as OpenAiErrorBody).error;
    if (error && typeof error === 'object') return error;
  }
  return undefined;
}

// Provider messages can quote the key ("Incorrect API key provided: sk-...");
// anything that looks like one is cut before the caller or a log sees it.
const SECRET_LIKE = /\b(sk|pk|rk|key)[-_][A-Za-z0-9_*-]{6,}/gi;

export function scrubSecrets(text: string): string {
  return text.replace(SECRET_LIKE, '[redacted]');
}

export function classifyOpenAi(status: number, headers: Headers, body: unknown, nowMs: number = Date.now()): ProviderFailure {
  const error = errorOf(body);
  // Whatever its body holds, a message that is not text is no message (and must not throw here).
  const message = scrubSecrets(typeof error?.message === 'string' ? error.message : `provider answered HTTP ${status}`);
  const retryAfterMs = parseRetryAfter(headers, nowMs);
  if (status === 429) {
    const quota = error?.code === 'insufficient_quota' || error?.type === 'insufficient_quota';
    return { kind: quota ? 'quota_exhausted' : 'rate_limited', status, message, retryAfterMs };
  }
  if (status === 401 || status === 403) return { kind: 'unauthorized', status, message, retryAfterMs };
  if (status === 408 || status >= 500) return { kind: 'unavailable', status, message, retryAfterMs };
  // A redirect or another 2xx is not an answer to a chat call: the provider (or a proxy before it) is
  // misbehaving, which is not the caller's mistake, so it fails over rather than reach the caller as is.
  if (status < 400) return { kind: 'unavailable', status: 502, message: `provider answered HTTP ${status}`, retryAfterMs };
  return { kind: 'rejected', status, message, retryAfterMs, code: identifierOf(error?.code), param: identifierOf(error?.param) };
}

/** A provider's error code or param, passed on only when it looks like one: a short identifier, nothing key-like. */
function identifierOf(value: unknown): string | undefined {
  return typeof value === 'string' && IDENTIFIER.test(value) && scrubSecrets(value) === value ? value : undefined;
}

const IDENTIFIER = /^[A-Za-z0-9_.[\]-]{1,64}$/;
