import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

type WriteMethod = (this: Socket, ...args: unknown[]) => void;

/** Counts the writes made on sockets whose local port is `port` (the server's side of its connections) while `run` runs. */
async function countServerWrites(port: number, run: () => Promise<void>): Promise<number> {
  const prototype = Socket.prototype as unknown as Record<'_write' | '_writev', WriteMethod>;
  const originals = { _write: prototype._write, _writev: prototype._writev };
  let writes = 0;
  for (const name of ['_write', '_writev'] as const) {
    prototype[name] = function (this: Socket, ...args: unknown[]) {
      if (this.localPort === port) writes++;
      originals[name].apply(this, args);
    };
  }
  try {
    await run();
  } finally {
    Object.assign(prototype, originals);
  }
  return writes;
}

function askStream(t: TestMesh): Promise<Response> {
  return fetch(`${t.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'count my writes' }] }),
  });
}

describe('how the edge writes a stream', function () {
  let t: TestMesh | undefined;
  afterEach(async function () {
    await t?.stop();
    t = undefined;
  });

  it('sends a stream that arrived all at once in one write: headers, events and end', async function () {
    t = await startTestMesh({ streamChunkDelayMs: 0 });
    const mesh = t;
    await (await askStream(mesh)).text(); // connections and code paths warmed
    let text = '';
    const writes = await countServerWrites(mesh.mesh.httpPort, async () => {
      text = await (await askStream(mesh)).text();
    });
    assert.match(text, /data: \[DONE\]\n\n$/);
    assert.equal(writes, 1);
  });

  it('still sends the headers the moment the provider\'s arrive when the events come later', async function () {
    const chunkDelayMs = 250;
    t = await startTestMesh({ streamChunkDelayMs: chunkDelayMs });
    const startedMs = performance.now();
    const response = await askStream(t);
    const headersMs = performance.now() - startedMs;
    const text = await response.text();
    const endedMs = performance.now() - startedMs;
    assert.equal(response.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    assert.match(text, /data: \[DONE\]\n\n$/);
    assert.ok(endedMs >= 4 * chunkDelayMs, `the stream took ${endedMs} ms`);
    assert.ok(headersMs < chunkDelayMs, `headers came after ${headersMs.toFixed(0)} ms, the stream ended after ${endedMs.toFixed(0)} ms`);
  });
});
