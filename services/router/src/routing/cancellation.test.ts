import assert from 'node:assert/strict';
import { AttemptCancellation, RequestCancellation } from './cancellation';

/** A listener that counts its calls. */
function counter(): { listener: () => void; readonly calls: number } {
  const counted = {
    calls: 0,
    listener: (): void => {
      counted.calls++;
    },
  };
  return counted;
}

describe('RequestCancellation', () => {
  it('calls each listener once with the reason already set, and later aborts change nothing', () => {
    const cancellation = new RequestCancellation();
    const seen: unknown[] = [];
    cancellation.addEventListener('abort', () => seen.push(['a', cancellation.reason]), { once: true });
    cancellation.addEventListener('abort', () => seen.push(['b', cancellation.reason]));
    assert.equal(cancellation.aborted, false);
    cancellation.throwIfAborted();

    const first = new Error('deadline');
    cancellation.abort(first);
    cancellation.abort(new Error('second'));

    assert.deepEqual(seen, [['a', first], ['b', first]]);
    assert.equal(cancellation.aborted, true);
    assert.equal(cancellation.reason, first);
    assert.throws(() => cancellation.throwIfAborted(), (err) => err === first);
  });

  it('does not call a removed listener, nor one added after the end', () => {
    const cancellation = new RequestCancellation();
    const counted = counter();
    cancellation.addEventListener('abort', counted.listener);
    cancellation.removeEventListener('abort', counted.listener);
    cancellation.removeEventListener('abort', counted.listener);
    cancellation.abort('gone');
    cancellation.addEventListener('abort', counted.listener);
    assert.equal(counted.calls, 0);
  });

  it('removes one registration of a listener added twice', () => {
    const cancellation = new RequestCancellation();
    const counted = counter();
    cancellation.addEventListener('abort', counted.listener);
    cancellation.addEventListener('abort', counted.listener);
    cancellation.removeEventListener('abort', counted.listener);
    cancellation.abort('gone');
    assert.equal(counted.calls, 1);
  });

  it('runs every listener when one throws, and reports the error asynchronously', async () => {
    const cancellation = new RequestCancellation();
    const failure = new Error('listener failed');
    let later = false;
    cancellation.addEventListener('abort', () => {
      throw failure;
    });
    cancellation.addEventListener('abort', () => {
      later = true;
    });
    const reported = new Promise<unknown>((resolve) => {
      const listeners = process.listeners('uncaughtException');
      process.removeAllListeners('uncaughtException');
      process.once('uncaughtException', (err) => {
        for (const l of listeners) process.on('uncaughtException', l);
        resolve(err);
      });
    });
    cancellation.abort('gone');
    assert.equal(later, true);
    assert.equal(await reported, failure);
  });

});

describe('AttemptCancellation', () => {
  it("ends with a TimeoutError at the provider's timeout", async () => {
    const request = new RequestCancellation();
    const attempt = new AttemptCancellation(request, 20);
    assert.equal(attempt.aborted, false);
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(attempt.aborted, true);
    assert.equal((attempt.reason as Error).name, 'TimeoutError');
    assert.equal(request.aborted, false, 'the request itself goes on (another key, another target)');
    attempt.end();
  });

  it('ends with the request, and with its reason; at once when the request already ended', () => {
    const request = new RequestCancellation();
    const attempt = new AttemptCancellation(request, 60_000);
    request.abort('caller gone');
    assert.equal(attempt.reason, 'caller gone');
    attempt.end();

    const late = new AttemptCancellation(request, 60_000);
    assert.equal(late.reason, 'caller gone');
    late.end();
  });

  it('after end(), neither the timer nor the request ends it', async () => {
    const request = new RequestCancellation();
    const attempt = new AttemptCancellation(request, 20);
    attempt.end();
    await new Promise((resolve) => setTimeout(resolve, 60));
    request.abort('caller gone');
    assert.equal(attempt.aborted, false);
  });
});
