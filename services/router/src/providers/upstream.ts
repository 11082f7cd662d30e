import { Pool, type Dispatcher } from 'undici';
import type { IncomingHttpHeaders } from 'node:http';
import type { CancelSignal } from '../routing/cancellation';

/** A provider's whole answer, read into memory. */
export interface UpstreamAnswer {
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/**
 * Keep-alive connections to one provider origin. Created when a policy names
 * the provider and reused across policy versions while its URL is unchanged.
 */
export class Upstream {
  private readonly pool: Pool;
  /** The base URL's path, e.g. "/v1"; adapter paths are appended to it. */
  readonly basePath: string;

  constructor(readonly baseUrl: string) {
    const url = new URL(baseUrl);
    this.basePath = url.pathname.replace(/\/$/, '');
    this.pool = new Pool(url.origin, {
      connections: 256,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      // Deadlines are enforced per request by the router; these only catch a
      // provider that accepted the socket and then went silent forever.
      headersTimeout: 300_000,
      bodyTimeout: 300_000,
    });
  }

  /** A POST whose answer is streamed to the caller as it arrives. */
  request(path: string, headers: Record<string, string>, body: string | Buffer, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    return this.pool.request({ method: 'POST', path: this.basePath + path, headers, body, signal });
  }

  /**
   * A POST whose whole answer is wanted at once (JSON). Read through a
   * dispatch handler rather than `request`, which wraps every answer in a
   * Readable stream and its consumer: on the gateway's hot path that
   * machinery cost more than the rest of the provider call.
   */
  fetch(path: string, headers: Record<string, string>, body: string | Buffer, signal: CancelSignal): Promise<UpstreamAnswer> {
    return new Promise((resolve, reject) => {
      this.pool.dispatch({ method: 'POST', path: this.basePath + path, headers, body }, new AnswerReader(signal, resolve, reject));
    });
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/** Collects one answer; the signal aborts it, rejecting with the signal's reason as `request` does. */
class AnswerReader implements Dispatcher.DispatchHandler {
  private statusCode = 0;
  private headers: IncomingHttpHeaders = {};
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private controller: Dispatcher.DispatchController | undefined;
  private readonly onAbort = (): void => this.controller?.abort(this.signal.reason as Error);

  constructor(
    private readonly signal: CancelSignal,
    private readonly resolve: (answer: UpstreamAnswer) => void,
    private readonly reject: (err: Error) => void,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.signal.aborted) controller.abort(this.signal.reason as Error);
    else this.signal.addEventListener('abort', this.onAbort, { once: true });
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.statusCode = statusCode;
    this.headers = headers;
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
  }

  onResponseEnd(): void {
    this.signal.removeEventListener('abort', this.onAbort);
    const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.size);
    this.resolve({ statusCode: this.statusCode, headers: this.headers, body });
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.signal.removeEventListener('abort', this.onAbort);
    this.reject(err);
  }
}
