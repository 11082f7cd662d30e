import { Code, KeymeshError, Reason } from '@keymesh/errors';

/**
 * What the router's own code needs of a request's cancellation: whether and
 * why it ended, and a callback when it does. An AbortSignal is one; so is a
 * RequestCancellation, which the HTTP edge makes per request instead.
 */
export interface CancelSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  /** Throws the reason once aborted. */
  throwIfAborted(): void;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/**
 * A request's cancellation (caller gone, deadline passed) that costs a plain
 * object. On Node 20 an AbortController costs several microseconds to make
 * and each listener more to add and remove: on the edge's hot path that was
 * a few percent of the whole request. The provider calls take a CancelSignal
 * (undici dispatch handlers), so none needs a real AbortSignal.
 */
export class RequestCancellation implements CancelSignal {
  aborted = false;
  reason: unknown = undefined;
  private listeners: (() => void)[] | undefined;

  /** Ends the request with `reason`; later calls change nothing, as with AbortController. */
  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners) {
      for (const listener of listeners) {
        try {
          listener();
        } catch (err) {
          // As EventTarget does: one failing listener neither stops the others nor the caller.
          queueMicrotask(() => {
            throw err;
          });
        }
      }
    }
  }

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  /** Like AbortSignal's: a listener added after the end is never called. Every listener runs at most once. */
  addEventListener(_type: 'abort', listener: () => void, _options?: { once?: boolean }): void {
    if (this.aborted) return;
    (this.listeners ??= []).push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const listeners = this.listeners;
    if (!listeners) return;
    const at = listeners.lastIndexOf(listener);
    if (at >= 0) listeners.splice(at, 1);
  }
}

/**
 * A request's cancellation that also ends it at its deadline, as both edges
 * need. The timer is held by the request until `end()` (it is over, or its
 * caller left): AbortSignal.timeout inside AbortSignal.any is held weakly on
 * Node 20, and a GC took the deadline with it.
 */
export class DeadlineCancellation extends RequestCancellation {
  private readonly timer: NodeJS.Timeout;

  constructor(budgetMs: number) {
    super();
    this.timer = setTimeout(
      () => this.abort(new KeymeshError({ code: Code.DeadlineExceeded, reason: Reason.DEADLINE_EXCEEDED, message: `the request did not finish within ${budgetMs} ms` })),
      budgetMs,
    );
  }

  end(): void {
    clearTimeout(this.timer);
  }
}

/**
 * One provider attempt's cancellation: its request's, or the provider's
 * per-attempt timeout (a TimeoutError, as AbortSignal.timeout gives),
 * whichever comes first. `end()` once the attempt is over clears the timer
 * and the listener on the request, where AbortSignal.any plus
 * AbortSignal.timeout left a live timer per attempt until the timeout.
 */
export class AttemptCancellation extends RequestCancellation {
  private readonly timer: NodeJS.Timeout;
  private readonly onRequestEnd = (): void => this.abort(this.request.reason);

  constructor(
    private readonly request: CancelSignal,
    timeoutMs: number,
  ) {
    super();
    this.timer = setTimeout(() => this.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), timeoutMs);
    this.timer.unref();
    if (request.aborted) this.onRequestEnd();
    else request.addEventListener('abort', this.onRequestEnd, { once: true });
  }

  end(): void {
    clearTimeout(this.timer);
    this.request.removeEventListener('abort', this.onRequestEnd);
  }
}
