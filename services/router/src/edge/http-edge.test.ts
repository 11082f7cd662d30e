import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { createTelemetry, type Logger } from '@keymesh/telemetry';
import { createHttpEdge, type HttpEdgeDeps } from './http-edge';

/** Just enough of the router for requests that never get past reading their body. */
function edgeDeps(counted: number[], errors: string[]): HttpEdgeDeps {
  const logger: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: (message) => void errors.push(message) };
  return {
    telemetry: createTelemetry('http-edge-test'),
    logger,
    maxBodyBytes: 1_048_576,
    gateway: { authenticate: () => 'tenant-a', resolveRoute: () => ({ alias: 'gpt-4o-mini', timeoutMs: 1_000 }) },
    requests: { count: (_route: string, status: number) => void counted.push(status) },
    requestReceiveTimeoutMs: 300,
  } as unknown as HttpEdgeDeps;
}

/** Sends `head` and part of a body, then nothing; resolves with what came back once the server closed the socket. */
function trickle(port: number, head: string, partialBody: string, giveUpMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(head + partialBody));
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.on('close', () => resolve(received));
    socket.on('error', reject);
    setTimeout(() => {
      socket.destroy();
      resolve(`${received}(still open after ${giveUpMs} ms)`);
    }, giveUpMs).unref();
  });
}

describe('the HTTP edge', () => {
  it('answers 408 and closes when a client sends its headers and then stops sending its body', async () => {
    const counted: number[] = [];
    const errors: string[] = [];
    const edge = createHttpEdge(edgeDeps(counted, errors));
    const port = await edge.listen('127.0.0.1', 0);
    try {
      const head = 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n';
      const startedMs = Date.now();
      const answer = await trickle(port, head, '{"model":"gpt-4o', 3_000);
      assert.match(answer, /^HTTP\/1\.1 408 /, answer);
      assert.ok(Date.now() - startedMs < 2_000, `closed after ${Date.now() - startedMs} ms`);
      // A client that stalls is not a fault of the gateway's: nothing is logged as one.
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(errors, []);
    } finally {
      await edge.close(100);
    }
  });

  it('answers malformed chat requests 400 with the offending param, and a wrong method 405, in OpenAI\'s error shape', async () => {
    const counted: number[] = [];
    const errors: string[] = [];
    const edge = createHttpEdge(edgeDeps(counted, errors));
    const port = await edge.listen('127.0.0.1', 0);
    const send = async (method: string, body: unknown) => {
      const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method,
        headers: { authorization: 'Bearer sk-test', 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: response.status, allow: response.headers.get('allow'), body: (await response.json()) as { error: { param: string | null; type: string } } };
    };
    try {
      for (const messages of [[null], ['hi'], [[{ role: 'user' }]]]) {
        const answer = await send('POST', { model: 'gpt-4o-mini', messages });
        assert.equal(answer.status, 400, JSON.stringify(messages));
        assert.equal(answer.body.error.param, 'messages');
      }
      for (const stream of ['yes', 'true', 1]) {
        const answer = await send('POST', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], stream });
        assert.equal(answer.status, 400, JSON.stringify(stream));
        assert.equal(answer.body.error.param, 'stream');
      }
      const wrongMethod = await send('GET', undefined);
      assert.equal(wrongMethod.status, 405);
      assert.equal(wrongMethod.allow, 'POST');
      assert.deepEqual(errors, []);
    } finally {
      await edge.close(100);
    }
  });
});
