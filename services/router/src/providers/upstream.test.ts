import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Upstream } from './upstream';

describe('Upstream.fetch', () => {
  let server: Server;
  let upstream: Upstream;
  let handler: (req: IncomingMessage, res: ServerResponse) => void;
  const received: { path: string; headers: IncomingMessage['headers']; body: string }[] = [];

  before(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() });
        handler(req, res);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    upstream = new Upstream(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/`);
  });

  after(async () => {
    await upstream.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  beforeEach(() => {
    received.length = 0;
  });

  it('posts the body under the base path and reads the whole answer, however many chunks it came in', async () => {
    handler = (_req, res) => {
      res.writeHead(429, { 'x-ratelimit-remaining-requests': '0', 'content-type': 'application/json' });
      res.write('{"error":');
      setTimeout(() => res.end('{"message":"slow down"}}'), 5);
    };
    const answer = await upstream.fetch('/chat/completions', { 'content-type': 'application/json', authorization: 'Bearer sk-x' }, '{"model":"m"}', new AbortController().signal);
    assert.equal(answer.statusCode, 429);
    assert.equal(answer.headers['x-ratelimit-remaining-requests'], '0');
    assert.deepEqual(JSON.parse(answer.body.toString()), { error: { message: 'slow down' } });
    assert.equal(received[0].path, '/v1/chat/completions');
    assert.equal(received[0].headers.authorization, 'Bearer sk-x');
    assert.equal(received[0].body, '{"model":"m"}');
  });

  it('answers an empty body as an empty buffer', async () => {
    handler = (_req, res) => res.writeHead(204).end();
    const answer = await upstream.fetch('/x', {}, '', new AbortController().signal);
    assert.equal(answer.statusCode, 204);
    assert.equal(answer.body.length, 0);
  });

  it("rejects with the signal's reason when aborted mid-answer, and stops reading", async () => {
    let closed!: () => void;
    const connectionClosed = new Promise<void>((resolve) => (closed = resolve));
    handler = (_req, res) => {
      res.writeHead(200);
      res.write('{"partial":');
      res.on('close', closed);
    };
    const controller = new AbortController();
    const reason = new Error('deadline');
    const pending = upstream.fetch('/slow', {}, '{}', controller.signal);
    await new Promise((resolve) => setTimeout(resolve, 30));
    controller.abort(reason);
    await assert.rejects(pending, (err) => err === reason);
    await connectionClosed;
  });

  it('rejects when the provider cuts its answer short, rather than answering with half a body', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"partial":');
      setTimeout(() => res.socket?.destroy(), 5);
    };
    await assert.rejects(upstream.fetch('/cut', {}, '{}', new AbortController().signal));
  });

  it('does not call at all with a signal that is already aborted', async () => {
    handler = (_req, res) => res.end('{}');
    const controller = new AbortController();
    const reason = new Error('caller gone');
    controller.abort(reason);
    await assert.rejects(upstream.fetch('/x', {}, '{}', controller.signal), (err) => err === reason);
    assert.equal(received.length, 0);
  });

  it('rejects when the provider cannot be reached', async () => {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const nowhere = new Upstream(`http://127.0.0.1:${port}/v1`);
    try {
      await assert.rejects(nowhere.fetch('/x', {}, '{}', new AbortController().signal), (err: Error) => /ECONNREFUSED/.test(`${err.message} ${(err as { code?: string }).code}`));
    } finally {
      await nowhere.close();
    }
  });
});
