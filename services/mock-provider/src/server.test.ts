import assert from 'node:assert/strict';
import { startMockProvider } from './server';
import { call, chatBody, FakeClock, waitFor } from './test-support';
import type { MockProvider, MockProviderOptions } from './types';

const INVALID_API_KEY = {
  error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' },
};

describe('mock provider over HTTP', () => {
  const started: MockProvider[] = [];
  async function start(options: MockProviderOptions): Promise<MockProvider> {
    const provider = await startMockProvider(options);
    started.push(provider);
    return provider;
  }
  afterEach(async () => {
    await Promise.all(started.splice(0).map((provider) => provider.close()));
  });

  describe('rate limits', () => {
    it('keeps silent limits out of the headers until it refuses a request', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a', limits: [{ requests: 1, perMs: 60_000 }], silentLimits: true }] });
      const ask = () => call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('hi') });
      const ok = await ask();
      assert.equal(ok.status, 200);
      assert.equal(ok.headers['x-ratelimit-remaining-requests'], undefined);
      const refused = await ask();
      assert.equal(refused.status, 429);
      assert.equal(refused.headers['x-ratelimit-remaining-requests'], '0');
      assert.ok(Number(refused.headers['retry-after']) > 0);
    });

    it('admits exactly N in a sliding window, refuses the next with retry-after, and admits again once the oldest slides out', async () => {
      const clock = new FakeClock();
      const provider = await start({ keys: [{ secret: 'sk-a', limits: [{ requests: 3, perMs: 60_000 }] }], now: clock.now });
      const ask = () => call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('hi') });

      for (const remaining of ['2', '1', '0']) {
        const ok = await ask();
        assert.equal(ok.status, 200);
        assert.equal(ok.headers['x-ratelimit-remaining-requests'], remaining);
        clock.advance(10_000);
      }
      // Now at +30s; the first request (at +0s) leaves the window at +60s.
      const refused = await ask();
      assert.equal(refused.status, 429);
      assert.equal(refused.headers['retry-after'], '30');
      assert.equal(refused.headers['retry-after-ms'], '30000');
      assert.equal(refused.headers['x-ratelimit-remaining-requests'], '0');
      const { error } = JSON.parse(refused.text) as { error: { message: string; type: string; code: string } };
      assert.equal(error.type, 'requests');
      assert.equal(error.code, 'rate_limit_exceeded');
      assert.match(error.message, /^Rate limit reached for requests/);

      clock.advance(29_999);
      const stillRefused = await ask();
      assert.equal(stillRefused.status, 429);
      assert.equal(stillRefused.headers['retry-after'], '1');
      assert.equal(stillRefused.headers['retry-after-ms'], '1');

      // The refusals above took no capacity: exactly one slot is free at +60s.
      clock.advance(1);
      assert.equal((await ask()).status, 200);
      const full = await ask();
      assert.equal(full.status, 429);
      assert.equal(full.headers['retry-after-ms'], '10000');

      assert.deepEqual(provider.stats('sk-a'), { requests: 7, ok: 4, rateLimited: 3, unauthorized: 0, quotaExceeded: 0, failed: 0 });
    });

    it('formats reset headers like OpenAI, as the time until the oldest entry expires', async () => {
      const clock = new FakeClock();
      const provider = await start({
        keys: [
          { secret: 'sk-minute', limits: [{ requests: 10, tokens: 1_000, perMs: 60_000 }] },
          { secret: 'sk-hours', limits: [{ requests: 10, perMs: 7_200_000 }] },
        ],
        now: clock.now,
      });
      const first = await call(provider, '/v1/chat/completions', { secret: 'sk-minute', body: chatBody('abcd', { max_tokens: 10 }) });
      assert.equal(first.headers['x-ratelimit-limit-requests'], '10');
      assert.equal(first.headers['x-ratelimit-reset-requests'], '1m0s');
      assert.equal(first.headers['x-ratelimit-limit-tokens'], '1000');
      // Charged prompt (ceil(4/4) = 1) plus max_tokens (10).
      assert.equal(first.headers['x-ratelimit-remaining-tokens'], '989');
      assert.equal(first.headers['x-ratelimit-reset-tokens'], '1m0s');

      clock.advance(30_000);
      const second = await call(provider, '/v1/chat/completions', { secret: 'sk-minute', body: chatBody('abcd') });
      assert.equal(second.headers['x-ratelimit-reset-requests'], '30s');

      clock.advance(29_980);
      const third = await call(provider, '/v1/chat/completions', { secret: 'sk-minute', body: chatBody('abcd') });
      assert.equal(third.headers['x-ratelimit-reset-requests'], '20ms');

      const hours = await call(provider, '/v1/chat/completions', { secret: 'sk-hours', body: chatBody('abcd') });
      assert.equal(hours.headers['x-ratelimit-reset-requests'], '2h0m0s');
      assert.equal(hours.headers['x-ratelimit-limit-tokens'], undefined);
    });

    it('refuses a request over a token window with type tokens', async () => {
      const clock = new FakeClock();
      const provider = await start({ keys: [{ secret: 'sk-t', limits: [{ tokens: 100, perMs: 60_000 }] }], now: clock.now });
      const body = chatBody('abcd', { max_tokens: 60 });
      assert.equal((await call(provider, '/v1/chat/completions', { secret: 'sk-t', body })).status, 200);
      const refused = await call(provider, '/v1/chat/completions', { secret: 'sk-t', body });
      assert.equal(refused.status, 429);
      assert.equal(refused.headers['retry-after'], '60');
      assert.equal((JSON.parse(refused.text) as { error: { type: string } }).error.type, 'tokens');
    });

    it('applies limits replaced at run time', async () => {
      const clock = new FakeClock();
      const provider = await start({ keys: [{ secret: 'sk-a' }], now: clock.now });
      assert.equal((await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('x') })).status, 200);
      provider.setKeyLimits('sk-a', [{ requests: 1, perMs: 1_000 }]);
      assert.equal((await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('x') })).status, 200);
      assert.equal((await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('x') })).status, 429);
      provider.setKeyLimits('sk-a', undefined);
      assert.equal((await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('x') })).status, 200);
    });
  });

  describe('auth', () => {
    it('answers 401 invalid_api_key to a missing or unknown key without echoing it', async () => {
      const provider = await start({ keys: [{ secret: 'sk-known' }] });
      const unknown = await call(provider, '/v1/chat/completions', { secret: 'sk-unknown-1234', body: chatBody('hi') });
      assert.equal(unknown.status, 401);
      assert.deepEqual(JSON.parse(unknown.text), INVALID_API_KEY);
      assert.ok(!unknown.text.includes('1234'));
      const missing = await call(provider, '/v1/models');
      assert.equal(missing.status, 401);
      assert.deepEqual(JSON.parse(missing.text), INVALID_API_KEY);
      assert.equal(provider.stats().unauthorized, 2);
      assert.equal(provider.stats('sk-known').requests, 0);
    });

    it('answers 401 to a revoked key from the moment it is revoked', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }, { secret: 'sk-b' }] });
      assert.equal((await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('hi') })).status, 200);
      provider.revokeKey('sk-a');
      const revoked = await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('hi') });
      assert.equal(revoked.status, 401);
      assert.deepEqual(JSON.parse(revoked.text), INVALID_API_KEY);
      assert.equal((await call(provider, '/v1/chat/completions', { secret: 'sk-b', body: chatBody('hi') })).status, 200);
      assert.deepEqual(provider.stats('0'), { requests: 2, ok: 1, rateLimited: 0, unauthorized: 1, quotaExceeded: 0, failed: 0 });
    });
  });

  describe('quota', () => {
    it('answers 429 insufficient_quota without retry-after once the quota is spent, forever', async () => {
      const clock = new FakeClock();
      const provider = await start({ keys: [{ secret: 'sk-q', quotaRequests: 2 }], now: clock.now });
      const ask = () => call(provider, '/v1/chat/completions', { secret: 'sk-q', body: chatBody('hi') });
      assert.equal((await ask()).status, 200);
      assert.equal((await ask()).status, 200);
      for (let i = 0; i < 2; i += 1) {
        const spent = await ask();
        assert.equal(spent.status, 429);
        assert.equal(spent.headers['retry-after'], undefined);
        const { error } = JSON.parse(spent.text) as { error: { type: string; code: string } };
        assert.equal(error.type, 'insufficient_quota');
        assert.equal(error.code, 'insufficient_quota');
        clock.advance(86_400_000);
      }
      assert.equal(provider.stats('sk-q').quotaExceeded, 2);
    });
  });

  describe('chat completions', () => {
    it('answers a deterministic chat.completion with estimated usage', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }] });
      const res = await call(provider, '/v1/chat/completions', {
        secret: 'sk-a',
        body: { model: 'my-model', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello world' }] },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-type'], 'application/json');
      const completion = JSON.parse(res.text) as Record<string, unknown>;
      assert.match(completion.id as string, /^chatcmpl-mock-\d+$/);
      assert.equal(completion.object, 'chat.completion');
      assert.equal(completion.model, 'my-model');
      const content = 'mock reply to: hello world';
      assert.deepEqual(completion.choices, [
        { index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: 'stop' },
      ]);
      // (8 + 11) chars of prompt, 26 of reply, about four characters a token.
      assert.deepEqual(completion.usage, { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 });
    });

    it('cuts the reply at max_tokens and says so with finish_reason length', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }] });
      const res = await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('hello world', { max_tokens: 2 }) });
      const completion = JSON.parse(res.text) as { choices: { message: { content: string }; finish_reason: string }[]; usage: { completion_tokens: number } };
      assert.equal(completion.choices[0].message.content, 'mock rep');
      assert.equal(completion.choices[0].finish_reason, 'length');
      assert.equal(completion.usage.completion_tokens, 2);
    });
  });

  describe('streams', () => {
    function parseFrames(text: string): string[] {
      assert.ok(text.endsWith('\n\n'), 'every frame ends with a blank line');
      return text
        .slice(0, -2)
        .split('\n\n')
        .map((frame) => {
          assert.match(frame, /^data: /);
          return frame.slice('data: '.length);
        });
    }

    it('frames a stream as role, content deltas, finish, usage, then [DONE]', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }], streamChunks: 4 });
      const body = chatBody('stream me please', { stream: true, stream_options: { include_usage: true } });
      const res = await call(provider, '/v1/chat/completions', { secret: 'sk-a', body });
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-type'], 'text/event-stream');
      const frames = parseFrames(res.text);
      assert.equal(frames.length, 1 + 4 + 1 + 1 + 1);
      assert.equal(frames.at(-1), '[DONE]');
      type Chunk = { id: string; object: string; choices: { delta: { role?: string; content?: string }; finish_reason: string | null }[]; usage?: unknown };
      const chunks = frames.slice(0, -1).map((frame) => JSON.parse(frame) as Chunk);
      assert.ok(chunks.every((chunk) => chunk.object === 'chat.completion.chunk' && chunk.id === chunks[0].id));
      assert.equal(chunks[0].choices[0].delta.role, 'assistant');
      const content = chunks.slice(1, 5).map((chunk) => chunk.choices[0].delta.content).join('');
      assert.equal(content, 'mock reply to: stream me please');
      assert.deepEqual(chunks[5].choices[0], { index: 0, delta: {}, logprobs: null, finish_reason: 'stop' });
      assert.deepEqual(chunks[6].choices, []);
      assert.deepEqual(chunks[6].usage, { prompt_tokens: 4, completion_tokens: 8, total_tokens: 12 });
      assert.ok(chunks.slice(0, 6).every((chunk) => chunk.usage === null));
    });

    it('sends no usage chunk unless include_usage is asked for', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }], streamChunks: 2 });
      const res = await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('x', { stream: true }) });
      const frames = parseFrames(res.text);
      assert.equal(frames.length, 1 + 2 + 1 + 1);
      assert.ok(!res.text.includes('usage'));
    });

    it('sends the same frames when chunks are spaced out in time', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }], streamChunks: 3, streamChunkDelayMs: 2 });
      const res = await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('slow', { stream: true }) });
      assert.ok(res.complete);
      assert.equal(parseFrames(res.text).length, 1 + 3 + 1 + 1);
    });

    for (const streamChunkDelayMs of [0, 2]) {
      it(`destroys the socket after cutStreamAfterChunks content chunks (chunk delay ${streamChunkDelayMs}ms)`, async () => {
        const provider = await start({ keys: [{ secret: 'sk-a' }], streamChunks: 8, streamChunkDelayMs, failures: { cutStreamAfterChunks: 3 } });
        const res = await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('cut me', { stream: true }) });
        assert.equal(res.status, 200);
        assert.equal(res.complete, false);
        const frames = parseFrames(res.text);
        assert.equal(frames.length, 1 + 3);
        assert.ok(!res.text.includes('[DONE]'));
        assert.equal(provider.stats('sk-a').failed, 1);
      });
    }
  });

  describe('embeddings', () => {
    type EmbeddingList = { object: string; data: { object: string; index: number; embedding: number[] }[]; usage: { prompt_tokens: number } };

    it('embeds each input deterministically in the requested dimensions', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }] });
      const embed = async (body: unknown): Promise<EmbeddingList> =>
        JSON.parse((await call(provider, '/v1/embeddings', { secret: 'sk-a', body })).text) as EmbeddingList;
      const list = await embed({ model: 'text-embedding-3-small', input: ['alpha', 'beta', 'alpha'] });
      assert.equal(list.object, 'list');
      assert.deepEqual(list.data.map((item) => item.index), [0, 1, 2]);
      assert.equal(list.data[0].embedding.length, 8);
      assert.deepEqual(list.data[0].embedding, list.data[2].embedding);
      assert.notDeepEqual(list.data[0].embedding, list.data[1].embedding);
      const norm = Math.hypot(...list.data[0].embedding);
      assert.ok(Math.abs(norm - 1) < 1e-6);
      assert.equal(list.usage.prompt_tokens, 2 + 1 + 2);

      const wide = await embed({ model: 'text-embedding-3-small', input: 'alpha', dimensions: 32 });
      assert.equal(wide.data[0].embedding.length, 32);
    });
  });

  describe('failures', () => {
    it('answers 503 with an OpenAI server_error body at errorRate 1', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }], failures: { errorRate: 1 } });
      const res = await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('hi') });
      assert.equal(res.status, 503);
      assert.equal((JSON.parse(res.text) as { error: { type: string } }).error.type, 'server_error');
      provider.setFailures({});
      assert.equal((await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('hi') })).status, 200);
      assert.deepEqual(provider.stats('sk-a'), { requests: 2, ok: 1, rateLimited: 0, unauthorized: 0, quotaExceeded: 0, failed: 1 });
    });

    it('waits latencyMs before answering an admitted request', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }], latencyMs: 60 });
      const startedAt = process.hrtime.bigint();
      assert.equal((await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('hi') })).status, 200);
      assert.ok(process.hrtime.bigint() - startedAt >= 55_000_000n);
    });

    it('closes without hanging while a hung request is outstanding', async () => {
      const provider = await startMockProvider({ keys: [{ secret: 'sk-a' }], failures: { hangRate: 1 } });
      const hung = call(provider, '/v1/chat/completions', { secret: 'sk-a', body: chatBody('hi') }).then(
        () => 'answered',
        () => 'dropped',
      );
      await waitFor(() => provider.stats().failed === 1);
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        provider.close().then(() => 'closed'),
        new Promise((resolve) => (timer = setTimeout(resolve, 2_000, 'still open'))),
      ]);
      clearTimeout(timer);
      assert.equal(outcome, 'closed');
      assert.equal(await hung, 'dropped');
    });
  });

  describe('routing', () => {
    it('answers bad JSON with 400, unknown paths with 404 and wrong methods with 405, in OpenAI shape', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }] });
      const badJson = await call(provider, '/v1/chat/completions', { secret: 'sk-a', rawBody: '{"model":' });
      assert.equal(badJson.status, 400);
      assert.equal((JSON.parse(badJson.text) as { error: { type: string } }).error.type, 'invalid_request_error');
      const noMessages = await call(provider, '/v1/chat/completions', { secret: 'sk-a', body: { model: 'm' } });
      assert.equal(noMessages.status, 400);
      assert.equal((JSON.parse(noMessages.text) as { error: { param: string } }).error.param, 'messages');
      const unknown = await call(provider, '/v1/nothing-here', { secret: 'sk-a' });
      assert.equal(unknown.status, 404);
      assert.ok('error' in (JSON.parse(unknown.text) as object));
      const wrongMethod = await call(provider, '/v1/chat/completions', { secret: 'sk-a', method: 'GET' });
      assert.equal(wrongMethod.status, 405);
      assert.equal(wrongMethod.headers.allow, 'POST');
      assert.ok('error' in (JSON.parse(wrongMethod.text) as object));
    });

    it('answers /healthz without auth', async () => {
      const provider = await start({ keys: [] });
      const res = await call(provider, '/healthz');
      assert.equal(res.status, 200);
      assert.equal(res.text, 'ok');
    });

    it('lists models', async () => {
      const provider = await start({ keys: [{ secret: 'sk-a' }] });
      const res = await call(provider, '/v1/models', { secret: 'sk-a' });
      const list = JSON.parse(res.text) as { object: string; data: { id: string; owned_by: string }[] };
      assert.equal(list.object, 'list');
      assert.deepEqual(list.data.map((model) => model.id), ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small']);
    });
  });

  describe('options', () => {
    it('rejects invalid options naming keys by index, never by secret', async () => {
      await assert.rejects(
        startMockProvider({ keys: [{ secret: 'sk-dup' }, { secret: 'sk-dup', limits: [{ perMs: 0 }] }] }),
        (error: Error) => {
          assert.match(error.message, /keys\[1\]\.secret/);
          assert.match(error.message, /keys\[1\]\.limits\[0\]\.perMs/);
          assert.ok(!error.message.includes('sk-dup'));
          return true;
        },
      );
    });
  });
});
