import type { BusMessage, Subscription } from './bus';

/**
 * A bounded queue read as an async iterator. When the reader falls behind by
 * more than `maxPending`, the oldest messages are dropped: a stuck consumer
 * must not grow the publisher's memory without bound.
 */
export class QueuedSubscription implements Subscription {
  private readonly pending: BusMessage[] = [];
  private waiter: ((result: IteratorResult<BusMessage>) => void) | undefined;
  private closed = false;
  dropped = 0;

  constructor(
    private readonly maxPending: number,
    private readonly onClose: () => void,
  ) {}

  push(message: BusMessage): void {
    if (this.closed) return;
    if (this.waiter) {
      const resolve = this.waiter;
      this.waiter = undefined;
      resolve({ value: message, done: false });
      return;
    }
    if (this.pending.length >= this.maxPending) {
      this.pending.shift();
      this.dropped++;
    }
    this.pending.push(message);
  }

  unsubscribe(): void {
    if (this.closed) return;
    this.closed = true;
    this.pending.length = 0;
    this.onClose();
    this.waiter?.({ value: undefined, done: true });
    this.waiter = undefined;
  }

  [Symbol.asyncIterator](): AsyncIterator<BusMessage> {
    return {
      next: () => {
        const message = this.pending.shift();
        if (message) return Promise.resolve({ value: message, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiter = resolve));
      },
      return: () => {
        this.unsubscribe();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
