import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RequestCancellation } from '../routing/cancellation';
import { Upstream, type UpstreamStream } from './upstream';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A provider on loopback answering with `handler`; it records each request as it starts and once read. */
interface TestProvider {
  readonly upstream: Upstream;
  handler: Handler;
  readonly received: { path: string; headers: IncomingMessage['headers']; body: string }[];
  requestsStarted: number;
  close(): Promise<void>;
}

async function startTestProvider(basePath: string): Promise<TestProvider> {
  const server: Server = createServer((req, res) => {
    provider.requestsStarted++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      provider.received.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() });
      provider.handler(req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const upstream = new Upstream(`http://127.0.0.1:${(server.address() as AddressInfo).port}${basePath}`);
  const provider: TestProvider = {
    upstream,
    handler: (_req, res) => res.end(),
    received: [],
    requestsStarted: 0,
    async close() {
      await upstream.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  return provider;
}

/** Makes the provider answer 200 with `first` and then wait; resolves once the caller hangs up. */
function answersThenWaits(provider: TestProvider, first: string): Promise<void> {
  return new Promise((resolve) => {
    provider.handler = (_req, res) => {
      res.writeHead(200);
      res.write(first);
      res.on('close', () => resolve());
    };
  });
}

describe('Upstream.fetch', () => {
  let provider: TestProvider;

  before(async () => {
    provider = await startTestProvider('/v1/');
  });

  after(() => provider.close());

  beforeEach(() => {
    provider.received.length = 0;
  });

  it('posts the body under the base path and reads the whole answer, however many chunks it came in', async () => {
    provider.handler = (_req, res) => {
      res.writeHead(429, { 'x-ratelimit-remaining-requests': '0', 'content-type': 'application/json' });
      res.write('{"error":');
      setTimeout(() => res.end('{"message":"slow down"}}'), 5);
    };
    const answer = await provider.upstream.fetch('/chat/completions', { 'content-type': 'application/json', authorization: 'Bearer sk-x' }, '{"model":"m"}', new AbortController().signal);
    assert.equal(answer.statusCode, 429);
    assert.equal(answer.headers['x-ratelimit-remaining-requests'], '0');
    assert.deepEqual(JSON.parse(answer.body.toString()), { error: { message: 'slow down' } });
    assert.equal(provider.received[0].path, '/v1/chat/completions');
    assert.equal(provider.received[0].headers.authorization, 'Bearer sk-x');
    assert.equal(provider.received[0].body, '{"model":"m"}');
  });

  it('answers an empty body as an empty buffer', async () => {
    provider.handler = (_req, res) => res.writeHead(204).end();
    const answer = await provider.upstream.fetch('/x', {}, '', new AbortController().signal);
    assert.equal(answer.statusCode, 204);
    assert.equal(answer.body.length, 0);
  });

  it("rejects with the signal's reason when aborted mid-answer, and stops reading", async () => {
    const connectionClosed = answersThenWaits(provider, '{"partial":');
    const controller = new AbortController();
    const reason = new Error('deadline');
    const pending = provider.upstream.fetch('/slow', {}, '{}', controller.signal);
    await new Promise((resolve) => setTimeout(resolve, 30));
    controller.abort(reason);
    await assert.rejects(pending, (err) => err === reason);
    await connectionClosed;
  });

  it('rejects when the provider cuts its answer short, rather than answering with half a body', async () => {
    provider.handler = (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"partial":');
      setTimeout(() => res.socket?.destroy(), 5);
    };
    await assert.rejects(provider.upstream.fetch('/cut', {}, '{}', new AbortController().signal));
  });

  it('does not call at all with a signal that is already aborted', async () => {
    provider.handler = (_req, res) => res.end('{}');
    const controller = new AbortController();
    const reason = new Error('caller gone');
    controller.abort(reason);
    const before = provider.requestsStarted;
    await assert.rejects(provider.upstream.fetch('/x', {}, '{}', controller.signal), (err) => err === reason);
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(provider.requestsStarted, before);
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

describe('Upstream.stream', () => {
  let provider: TestProvider;

  before(async () => {
    provider = await startTestProvider('/v1');
  });

  after(() => provider.close());

  const open = (untilHeaders = new RequestCancellation(), throughout = new RequestCancellation()) =>
    provider.upstream.stream('/chat/completions', { 'content-type': 'application/json' }, '{}', untilHeaders, throughout);

  async function started(pending: ReturnType<typeof open>): Promise<UpstreamStream> {
    const response = await pending;
    assert.ok(response.kind === 'stream', `expected a stream, got ${response.statusCode}`);
    return response;
  }

  async function readAll(body: AsyncIterable<Buffer>): Promise<string> {
    let text = '';
    for await (const chunk of body) text += chunk.toString();
    return text;
  }

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it("settles at a 200's headers and hands over the body as it arrives", async () => {
    let sendRest!: () => void;
    provider.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-ratelimit-remaining-requests': '7' });
      res.write('data: 1\n\n');
      sendRest = () => res.end('data: 2\n\ndata: [DONE]\n\n');
    };
    const stream = await started(open());
    assert.equal(stream.headers['x-ratelimit-remaining-requests'], '7');
    const iterator = stream.body[Symbol.asyncIterator]();
    assert.equal((await iterator.next()).value?.toString(), 'data: 1\n\n');
    sendRest();
    let rest = '';
    for (let step = await iterator.next(); !step.done; step = await iterator.next()) rest += step.value.toString();
    assert.equal(rest, 'data: 2\n\ndata: [DONE]\n\n');
  });

  it('answers any other status with the whole body, to classify', async () => {
    provider.handler = (_req, res) => {
      res.writeHead(429, { 'retry-after': '2' });
      res.write('{"error":');
      setTimeout(() => res.end('{"message":"slow down"}}'), 5);
    };
    const response = await open();
    assert.ok(response.kind === 'answer');
    assert.equal(response.statusCode, 429);
    assert.equal(response.headers['retry-after'], '2');
    assert.deepEqual(JSON.parse(response.body.toString()), { error: { message: 'slow down' } });
  });

  it("rejects with the attempt's reason while waiting for headers, and lets the stream outlast it once they came", async () => {
    provider.handler = () => undefined; // never answers
    const attempt = new RequestCancellation();
    const waiting = open(attempt);
    await sleep(20);
    const timeout = new Error('attempt timed out');
    attempt.abort(timeout);
    await assert.rejects(waiting, (err) => err === timeout);

    provider.handler = (_req, res) => {
      res.writeHead(200);
      res.write('a');
      setTimeout(() => res.end('b'), 40);
    };
    const slowAttempt = new RequestCancellation();
    const stream = await started(open(slowAttempt));
    slowAttempt.abort(new Error('attempt timed out'));
    assert.equal(await readAll(stream.body), 'ab');
  });

  it("fails the body with the request's reason when the request ends mid-stream, and hangs up", async () => {
    const hungUp = answersThenWaits(provider, 'first');
    const request = new RequestCancellation();
    const stream = await started(open(request, request));
    const reading = readAll(stream.body);
    await sleep(20);
    const gone = new Error('caller gone');
    request.abort(gone);
    await assert.rejects(reading, (err) => err === gone);
    await hungUp;
  });

  it('does not call at all when the request already ended', async () => {
    provider.handler = (_req, res) => res.end();
    const request = new RequestCancellation();
    const gone = new Error('caller gone');
    request.abort(gone);
    const before = provider.requestsStarted;
    await assert.rejects(open(new RequestCancellation(), request), (err) => err === gone);
    await sleep(30);
    assert.equal(provider.requestsStarted, before);
  });

  it('drops the chunks still queued when the request ends, so the next read throws its reason, and the one after says done', async () => {
    provider.handler = (_req, res) => {
      res.writeHead(200);
      res.write('one');
      setTimeout(() => res.write('two'), 10);
    };
    const request = new RequestCancellation();
    const stream = await started(open(request, request));
    await sleep(50); // both chunks queued, none read
    const gone = new Error('caller gone');
    request.abort(gone);
    const iterator = stream.body[Symbol.asyncIterator]();
    await assert.rejects(iterator.next(), (err) => err === gone);
    assert.deepEqual(await iterator.next(), { value: undefined, done: true });
  });

  it('refuses a second read while one is waiting', async () => {
    provider.handler = (_req, res) => {
      res.writeHead(200);
      res.flushHeaders();
      setTimeout(() => res.end('late'), 30);
    };
    const stream = await started(open());
    const iterator = stream.body[Symbol.asyncIterator]();
    const first = iterator.next();
    await assert.rejects(iterator.next(), /one reader/);
    assert.equal((await first).value?.toString(), 'late');
  });

  it('fails the body when the provider cuts the stream', async () => {
    provider.handler = (_req, res) => {
      res.writeHead(200);
      res.write('data: 1\n\n');
      setTimeout(() => res.socket?.destroy(), 10);
    };
    const stream = await started(open());
    await assert.rejects(readAll(stream.body));
  });

  for (const how of ['abort()', 'a loop that breaks'] as const) {
    it(`stops reading the provider on ${how}`, async () => {
      const hungUp = answersThenWaits(provider, 'first');
      const stream = await started(open());
      if (how === 'abort()') {
        stream.abort();
      } else {
        for await (const chunk of stream.body) {
          assert.equal(chunk.toString(), 'first');
          break;
        }
      }
      await hungUp;
    });
  }

  it('pauses the provider while the consumer is behind, and delivers every byte once it reads', async () => {
    const chunk = Buffer.alloc(64 * 1024, 120);
    const total = 32 * 1024 * 1024; // more than loopback's socket buffers can hold
    let written = 0;
    provider.handler = (_req, res) => {
      res.writeHead(200);
      const pump = (): void => {
        while (written < total) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    };
    const stream = await started(open());
    await sleep(300);
    const stalledAt = written;
    await sleep(200);
    assert.ok(written < total, `the provider wrote all ${total} bytes to a consumer that read none`);
    assert.equal(written, stalledAt, 'the provider kept writing to a consumer that read none');
    let received = 0;
    for await (const part of stream.body) received += part.length;
    assert.equal(received, total);
  });
});
