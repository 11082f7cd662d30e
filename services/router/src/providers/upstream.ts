import { Pool, type Dispatcher } from 'undici';
import type { IncomingHttpHeaders } from 'node:http';
import type { CancelSignal } from '../routing/cancellation';

/** A provider's whole answer, read into memory. */
export interface UpstreamAnswer {
  readonly kind: 'answer';
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** A 200 whose body is still arriving. */
export interface UpstreamStream {
  readonly kind: 'stream';
  readonly statusCode: 200;
  readonly headers: IncomingHttpHeaders;
  /** The body's chunks as they arrive, for one loop. */
  readonly body: AsyncIterable<Buffer>;
  /** Stops reading the provider; a loop still over the body throws. */
  abort(): void;
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
      // Off: every call already ends at its request's deadline (both edges
      // set one, finite by the config schema) and a provider's per-attempt
      // timeout. undici's own timers were a third bound that cost each call a
      // timer object kept about a second, long enough to be copied by two
      // young-generation collections and promoted.
      headersTimeout: 0,
      bodyTimeout: 0,
    });
  }

  /**
   * A POST whose answer is streamed to the caller as it arrives. It settles
   * with the headers when the provider says 200, and with the whole answer
   * otherwise. `untilHeaders` can end the call only while its headers are
   * awaited (a provider's per-attempt timeout); `throughout` ends it at any
   * point (caller gone, deadline), failing the body with its reason.
   */
  stream(path: string, headers: Record<string, string>, body: string | Buffer, untilHeaders: CancelSignal, throughout: CancelSignal): Promise<UpstreamStream | UpstreamAnswer> {
    // Aborting a dispatched request destroys its pooled connection: one already ended is not sent.
    if (throughout.aborted) return Promise.reject(throughout.reason);
    if (untilHeaders.aborted) return Promise.reject(untilHeaders.reason);
    return new Promise((resolve, reject) => {
      this.pool.dispatch({ method: 'POST', path: this.basePath + path, headers, body }, new StreamReader(untilHeaders, throughout, resolve, reject));
    });
  }

  /**
   * A POST whose whole answer is wanted at once (JSON). Read through a
   * dispatch handler rather than `request`, which wraps every answer in a
   * Readable stream and its consumer: on the gateway's hot path that
   * machinery cost more than the rest of the provider call.
   */
  fetch(path: string, headers: Record<string, string>, body: string | Buffer, signal: CancelSignal): Promise<UpstreamAnswer> {
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      this.pool.dispatch({ method: 'POST', path: this.basePath + path, headers, body }, new AnswerReader(signal, signal, resolve, reject));
    });
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/**
 * One provider call: collects its whole answer, and hears its cancellation
 * from the start, so a call still waiting for a pooled connection ends at
 * once too. `untilHeaders` can end it only until the headers arrive (a
 * provider's per-attempt timeout), `throughout` at any point (caller gone,
 * deadline); either rejects with its reason, as `request` does.
 */
class AnswerReader implements Dispatcher.DispatchHandler {
  protected controller: Dispatcher.DispatchController | undefined;
  protected statusCode = 0;
  protected headers: IncomingHttpHeaders = {};
  /** The body so far; a stream's chunks not yet handed over. */
  protected chunks: Buffer[] = [];
  protected size = 0;
  /** Why the call ended early (a cancel, or a stream's provider error). */
  protected failure: unknown = undefined;
  private readonly onHeadersCancelled = (): void => this.cancel(this.untilHeaders.reason);
  private readonly onCancelled = (): void => this.cancel(this.throughout.reason);

  constructor(
    private readonly untilHeaders: CancelSignal,
    private readonly throughout: CancelSignal,
    private readonly resolveAnswer: (answer: UpstreamAnswer) => void,
    protected readonly reject: (err: unknown) => void,
  ) {
    throughout.addEventListener('abort', this.onCancelled, { once: true });
    if (untilHeaders !== throughout) untilHeaders.addEventListener('abort', this.onHeadersCancelled, { once: true });
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.failure !== undefined) controller.abort(this.failure as Error);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.statusCode = statusCode;
    this.headers = headers;
    this.untilHeaders.removeEventListener('abort', this.onHeadersCancelled);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
  }

  onResponseEnd(): void {
    this.forget();
    const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.size);
    this.resolveAnswer({ kind: 'answer', statusCode: this.statusCode, headers: this.headers, body });
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.forget();
    this.reject(err);
  }

  /** Ends the call with `reason`; undici answers an abort with onResponseError(reason). */
  protected cancel(reason: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = reason;
    this.forget();
    if (this.controller) this.controller.abort(reason as Error);
    else this.reject(reason);
  }

  protected forget(): void {
    this.throughout.removeEventListener('abort', this.onCancelled);
    this.untilHeaders.removeEventListener('abort', this.onHeadersCancelled);
  }
}

/** Bytes buffered ahead of the consumer before the provider's socket is paused (a Readable's default). */
const HIGH_WATER_BYTES = 64 * 1024;

/**
 * Hands a 200's body to one consumer chunk by chunk, as an async iterator fed
 * by undici's dispatch callbacks; any other status is collected whole, to
 * classify. It replaces `request`'s Readable body, its async iterator and the
 * AbortSignal it needs: per stream that machinery cost more CPU than the rest
 * of the provider call. A consumer slower than the provider pauses the
 * socket, as a Readable's high-water mark would.
 */
class StreamReader extends AnswerReader implements AsyncIterableIterator<Buffer> {
  private started = false;
  private ended = false;
  /** A loop has heard the failure; like a Readable's iterator, later calls say done. */
  private failureTold = false;
  private waiter: { resolve: (result: IteratorResult<Buffer>) => void; reject: (err: unknown) => void } | undefined;

  constructor(
    untilHeaders: CancelSignal,
    throughout: CancelSignal,
    private readonly resolve: (response: UpstreamStream | UpstreamAnswer) => void,
    reject: (err: unknown) => void,
  ) {
    super(untilHeaders, throughout, resolve, reject);
  }

  override onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    // From here only the request's own end may cut the call: a healthy stream can outlast the attempt's timeout.
    super.onResponseStart(controller, statusCode, headers);
    if (statusCode !== 200) return;
    this.started = true;
    this.resolve({ kind: 'stream', statusCode: 200, headers, body: this, abort: () => this.cancel(new Error('the stream was abandoned')) });
  }

  override onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const waiter = this.waiter;
    if (waiter !== undefined) {
      this.waiter = undefined;
      waiter.resolve({ value: chunk, done: false });
      return;
    }
    super.onResponseData(controller, chunk);
    if (this.started && this.size >= HIGH_WATER_BYTES) controller.pause();
  }

  override onResponseEnd(): void {
    if (!this.started) return super.onResponseEnd();
    this.forget();
    this.ended = true;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.resolve({ value: undefined, done: true });
  }

  override onResponseError(controller: Dispatcher.DispatchController, err: Error): void {
    if (!this.started) return super.onResponseError(controller, err);
    this.forget();
    this.failure ??= err;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.failure);
  }

  next(): Promise<IteratorResult<Buffer>> {
    const chunk = this.chunks.shift();
    if (chunk !== undefined) {
      this.size -= chunk.length;
      if (this.size < HIGH_WATER_BYTES && this.controller?.paused === true) this.controller.resume();
      return Promise.resolve({ value: chunk, done: false });
    }
    if (this.failure !== undefined) {
      if (this.failureTold) return Promise.resolve({ value: undefined, done: true });
      this.failureTold = true;
      return Promise.reject(this.failure);
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter !== undefined) return Promise.reject(new Error('a provider stream has one reader, one chunk at a time'));
    return new Promise((resolve, reject) => {
      this.waiter = {
        resolve,
        reject: (err) => {
          this.failureTold = true;
          reject(err);
        },
      };
    });
  }

  /** A loop that stops early (break, or a throw in its body) stops reading the provider. */
  return(): Promise<IteratorResult<Buffer>> {
    this.cancel(new Error('the stream was abandoned'));
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this;
  }

  /**
   * A loop over the body throws `reason` next, without the chunks still
   * queued: the caller or its deadline is gone, and a loop that kept writing
   * them to a client that left would wait for a drain that never comes.
   */
  protected override cancel(reason: unknown): void {
    if (this.ended || this.failure !== undefined) return;
    this.chunks.length = 0;
    this.size = 0;
    super.cancel(reason);
  }
}
