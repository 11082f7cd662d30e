import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startMockProvider } from './server';
import { FakeClock } from './test-support';
import type { MockProvider } from './types';

describe('the openai SDK against the mock provider', () => {
  const clock = new FakeClock();
  let provider: MockProvider;
  let client: OpenAI;

  before(async () => {
    provider = await startMockProvider({
      keys: [{ secret: 'sk-sdk' }, { secret: 'sk-sdk-limited', limits: [{ requests: 1, perMs: 90_000 }] }],
      now: clock.now,
    });
    // The SDK retries 429 and 5xx by itself; these tests want to see each answer.
    client = new OpenAI({ apiKey: 'sk-sdk', baseURL: provider.url, maxRetries: 0 });
  });
  after(() => provider.close());

  it('creates a chat completion', async () => {
    const completion = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello sdk' }] });
    assert.equal(completion.object, 'chat.completion');
    assert.equal(completion.model, 'gpt-4o-mini');
    assert.equal(completion.choices[0].message.content, 'mock reply to: hello sdk');
    assert.equal(completion.choices[0].finish_reason, 'stop');
    assert.equal(completion.usage?.total_tokens, 3 + 6);
  });

  it('streams a chat completion with usage', async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'hello stream' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let content = '';
    let finishReason: string | null = null;
    let totalTokens: number | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      content += chunk.choices[0]?.delta.content ?? '';
      finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
      if (chunk.usage) totalTokens = chunk.usage.total_tokens;
    }
    assert.equal(content, 'mock reply to: hello stream');
    assert.equal(finishReason, 'stop');
    assert.equal(totalTokens, 3 + 7);
    assert.equal(chunks, 1 + 8 + 1 + 1);
  });

  it('creates embeddings in its default base64 encoding and as floats alike', async () => {
    const decoded = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['one', 'two'], dimensions: 16 });
    const floats = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['one', 'two'], dimensions: 16, encoding_format: 'float' });
    assert.equal(decoded.data.length, 2);
    assert.equal(decoded.data[1].index, 1);
    assert.equal(decoded.data[0].embedding.length, 16);
    assert.deepEqual(Array.from(decoded.data[0].embedding), floats.data[0].embedding);
    assert.equal(decoded.usage.prompt_tokens, 2);
  });

  it('lists and retrieves models', async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.deepEqual(ids, ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small']);
    assert.equal((await client.models.retrieve('gpt-4o')).owned_by, 'mock');
  });

  it('surfaces 401 and 429 as the SDK typed errors with their headers', async () => {
    const stranger = new OpenAI({ apiKey: 'sk-nobody', baseURL: provider.url, maxRetries: 0 });
    await assert.rejects(stranger.models.list(), (error: unknown) => {
      assert.ok(error instanceof OpenAI.AuthenticationError);
      assert.equal(error.code, 'invalid_api_key');
      return true;
    });

    const limited = new OpenAI({ apiKey: 'sk-sdk-limited', baseURL: provider.url, maxRetries: 0 });
    const ask = () => limited.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });
    await ask();
    await assert.rejects(ask(), (error: unknown) => {
      assert.ok(error instanceof OpenAI.RateLimitError);
      assert.equal(error.code, 'rate_limit_exceeded');
      assert.equal(error.headers.get('retry-after'), '90');
      assert.equal(error.headers.get('x-ratelimit-reset-requests'), '1m30s');
      return true;
    });
  });
});
