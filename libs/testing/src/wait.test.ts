import assert from 'node:assert/strict';
import { waitFor } from './wait';

describe('waitFor', () => {
  it('resolves with the first value the probe returns that is not undefined, null or false', async () => {
    let calls = 0;
    const results = [undefined, null, false, 'ready'];
    const value = await waitFor(() => results[calls++], { timeoutMs: 2000, intervalMs: 1, what: 'the counter' });
    assert.equal(value, 'ready');
    assert.equal(calls, 4);
  });

  it('keeps probing through thrown errors and async probes', async () => {
    let calls = 0;
    const value = await waitFor(
      async () => {
        calls++;
        if (calls < 3) throw new Error('ECONNREFUSED');
        return calls;
      },
      { timeoutMs: 2000, intervalMs: 1, what: 'a connection' },
    );
    assert.equal(value, 3);
  });

  it('rejects after the deadline naming what it waited for and the last error', async () => {
    const started = Date.now();
    await assert.rejects(
      waitFor(
        () => {
          throw new Error('connection refused');
        },
        { timeoutMs: 150, intervalMs: 10, what: 'redis to answer PING' },
      ),
      (err: Error) => {
        assert.match(err.message, /timed out after 150 ms waiting for redis to answer PING/);
        assert.match(err.message, /connection refused/);
        return true;
      },
    );
    assert.ok(Date.now() - started < 1000);
  });

  it('holds the deadline even when a probe never settles', async () => {
    const started = Date.now();
    await assert.rejects(
      waitFor(() => new Promise<undefined>(() => {}), { timeoutMs: 100, what: 'a hung probe' }),
      /waiting for a hung probe/,
    );
    assert.ok(Date.now() - started < 1000);
  });
});
