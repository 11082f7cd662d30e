import { request, type IncomingHttpHeaders } from 'node:http';
import type { MockProvider } from './types';

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** False when the server cut the body short. */
  complete: boolean;
}

export interface CallOptions {
  method?: string;
  secret?: string;
  body?: unknown;
  /** Sent as-is instead of `body`. */
  rawBody?: string;
}

/** One request on its own connection, reading whatever body arrives until the socket closes. */
export function call(provider: MockProvider, path: string, options: CallOptions = {}): Promise<RawResponse> {
  const payload = options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  const headers: Record<string, string> = {};
  if (options.secret !== undefined) headers.authorization = `Bearer ${options.secret}`;
  if (payload !== undefined) headers['content-type'] = 'application/json';
  return new Promise((resolve, reject) => {
    const req = request(
      `${provider.url.replace(/\/v1$/, '')}${path}`,
      { method: options.method ?? (payload === undefined ? 'GET' : 'POST'), headers, agent: false },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('error', () => undefined); // a cut stream surfaces as `complete: false`
        res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, complete: res.complete }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

export function chatBody(content: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: 'gpt-4o-mini', messages: [{ role: 'user', content }], ...extra };
}

/** Polls a condition the test cannot be told about directly (the server has taken a request in). */
export async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('waitFor: condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** A settable clock for `now`. */
export class FakeClock {
  constructor(public nowMs = 1_700_000_000_000) {}
  readonly now = (): number => this.nowMs;
  advance(ms: number): void {
    this.nowMs += ms;
  }
}
