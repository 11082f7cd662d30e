import assert from 'node:assert/strict';
import { WaitQueue, type WaitTimers } from './wait-queue';

/** Timers driven by hand: advance() fires what is due, in time order. */
class FakeTimers implements WaitTimers {
  private now = 1_700_000_000_000;
  private nextId = 0;
  private readonly pending = new Map<number, { atMs: number; fn: () => void }>();

  nowMs(): number {
    return this.now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.nextId;
    this.pending.set(id, { atMs: this.now + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }

  async advance(ms: number): Promise<void> {
    const endMs = this.now + ms;
    for (;;) {
      let due: [number, { atMs: number; fn: () => void }] | undefined;
      for (const entry of this.pending) if (entry[1].atMs <= endMs && (due === undefined || entry[1].atMs < due[1].atMs)) due = entry;
      if (due === undefined) break;
      this.pending.delete(due[0]);
      this.now = due[1].atMs;
      due[1].fn();
      await settle();
    }
    this.now = endMs;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

describe('WaitQueue', () => {
  let timers: FakeTimers;

  beforeEach(() => {
    timers = new FakeTimers();
  });

  it('gives turns in priority order, then arrival order, once the retry-after has passed', async () => {
    const queue = new WaitQueue(10, timers);
    const far = timers.nowMs() + 10_000;
    const turns: string[] = [];
    const waitFor = (name: string, priority: 'low' | 'normal' | 'high') => {
      const ticket = queue.join('route', priority, far)!;
      void ticket.next(100).then((turn) => {
        if (turn) {
          turns.push(name);
          ticket.leave(true);
        }
      });
    };
    waitFor('low-1', 'low');
    waitFor('normal-1', 'normal');
    waitFor('high-1', 'high');
    waitFor('normal-2', 'normal');
    waitFor('high-2', 'high');
    await timers.advance(99);
    assert.deepEqual(turns, [], 'nobody before the retry-after');
    await timers.advance(1);
    assert.deepEqual(turns, ['high-1', 'high-2', 'normal-1', 'normal-2', 'low-1']);
  });

  it('lets one request try at a time, and waits for the next retry-after when it is denied again', async () => {
    const queue = new WaitQueue(10, timers);
    const far = timers.nowMs() + 10_000;
    const first = queue.join('route', 'normal', far)!;
    const second = queue.join('route', 'normal', far)!;
    const firstTurn = first.next(50);
    let secondTurn = false;
    void second.next(50).then((turn) => (secondTurn = turn));
    await timers.advance(50);
    assert.equal(await firstTurn, true);
    assert.equal(secondTurn, false, 'the second waits while the first tries');
    // Denied again: full for another 200 ms.
    const again = first.next(200);
    await timers.advance(199);
    assert.equal(secondTurn, false);
    await timers.advance(1);
    assert.equal(await again, true, 'the first keeps its place');
    first.leave(true);
    await settle();
    assert.equal(secondTurn, true, 'an admission hands the turn on at once');
  });

  it('never keeps a waiter past its own bound, and says honestly when to retry', async () => {
    const queue = new WaitQueue(10, timers);
    const ticket = queue.join('route', 'high', timers.nowMs() + 300)!;
    let answer: boolean | undefined;
    void ticket.next(1_000).then((turn) => (answer = turn));
    await timers.advance(299);
    assert.equal(answer, undefined);
    await timers.advance(1);
    assert.equal(answer, false);
    assert.equal(queue.size('route'), 0);
    assert.equal(ticket.retryAfterMs(), 700);
  });

  it('turns a newcomer away at once when the line is full, with a retry-after', async () => {
    const queue = new WaitQueue(2, timers);
    const far = timers.nowMs() + 10_000;
    void queue.join('route', 'low', far)!.next(400);
    void queue.join('route', 'low', far)!.next(400);
    assert.equal(queue.join('route', 'high', far), undefined);
    assert.equal(queue.retryAfterMs('route'), 400);
    assert.ok(queue.join('other-route', 'low', far), 'lines are per route');
  });

  it('hands the turn on when the request holding it leaves without being admitted', async () => {
    const queue = new WaitQueue(10, timers);
    const far = timers.nowMs() + 10_000;
    const first = queue.join('route', 'normal', far)!;
    const second = queue.join('route', 'normal', far)!;
    const firstTurn = first.next(10);
    const secondTurn = second.next(10);
    await timers.advance(10);
    assert.equal(await firstTurn, true);
    first.leave(false);
    await timers.advance(0);
    assert.equal(await secondTurn, true);
  });
});
