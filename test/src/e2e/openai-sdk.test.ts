import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

describe('the HTTP edge with an unmodified OpenAI SDK', function () {
  let t: TestMesh;
  let client: OpenAI;

  before(async function () {
    t = await startTestMesh();
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
  });
  after(async function () {
    await t?.stop();
  });

  it('answers a chat completion and says which key served it', async function () {
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello there' }] })
      .withResponse();
    assert.equal(data.object, 'chat.completion');
    assert.match(data.choices[0].message.content ?? '', /hello there/);
    assert.ok(data.usage && data.usage.total_tokens > 0);
    assert.match(response.headers.get('x-keymesh-key-id') ?? '', /^k[123]$/);
    assert.equal(response.headers.get('x-keymesh-provider'), 'mock');
    assert.equal(response.headers.get('x-keymesh-attempts'), '1');
    assert.ok(response.headers.get('x-keymesh-request-id'));
  });

  it('streams a chat completion chunk by chunk', async function () {
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'stream this' }],
    });
    let text = '';
    let chunks = 0;
    let usageSeen = false;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usageSeen = true;
    }
    assert.ok(chunks > 3, `expected several chunks, got ${chunks}`);
    assert.match(text, /stream this/);
    assert.ok(usageSeen);
  });

  it('computes embeddings', async function () {
    const result = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
    assert.equal(result.data.length, 2);
    assert.ok(result.data[0].embedding.length > 0);
  });

  it('lists the routes as models', async function () {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.deepEqual(ids.sort(), ['gpt-4o-mini', 'gpt-4o-mini-cached', 'text-embedding-3-small']);
  });

  it('answers a wrong virtual key with 401 in OpenAI error shape', async function () {
    const stranger = new OpenAI({ baseURL: t.baseUrl, apiKey: 'sk-keymesh-wrong', maxRetries: 0 });
    await assert.rejects(stranger.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.AuthenticationError);
      assert.equal(err.status, 401);
      assert.equal((err.error as { type?: string }).type, 'authentication_error');
      assert.doesNotMatch(JSON.stringify(err.error), /sk-keymesh-wrong/);
      return true;
    });
  });

  it('answers an unknown model with 404 model-not-found', async function () {
    await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.NotFoundError);
      assert.equal((err.error as { code?: string }).code, 'model_not_found');
      return true;
    });
  });

  it('answers malformed JSON, missing messages and an oversized body with clear 4xx errors and keeps serving', async function () {
    const post = (body: string | Buffer, auth = VIRTUAL_KEY) =>
      fetch(`${t.baseUrl}/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/json' }, body });
    const malformed = await post('{"model": "gpt-4o-mini", "messages": [');
    assert.equal(malformed.status, 400);
    const malformedBody = (await malformed.json()) as { error: { type: string; message: string } };
    assert.equal(malformedBody.error.type, 'invalid_request_error');
    assert.match(malformedBody.error.message, /JSON/);

    const noMessages = await post(JSON.stringify({ model: 'gpt-4o-mini' }));
    assert.equal(noMessages.status, 400);
    assert.equal(((await noMessages.json()) as { error: { param: string } }).error.param, 'messages');

    const huge = await post(Buffer.alloc(2 * 1024 * 1024, 0x20));
    assert.equal(huge.status, 413);

    const missingAuth = await fetch(`${t.baseUrl}/chat/completions`, { method: 'POST', body: '{}' });
    assert.equal(missingAuth.status, 401);

    const after = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'still here?' }] });
    assert.match(after.choices[0].message.content ?? '', /still here/);
  });

  it('serves a repeated request on a cached route from the cache', async function () {
    const ask = () =>
      client.chat.completions
        .create({ model: 'gpt-4o-mini-cached', messages: [{ role: 'user', content: 'cache me' }] })
        .withResponse();
    const before = t.mock.stats().requests;
    const first = await ask();
    const second = await ask();
    assert.equal(first.response.headers.get('x-keymesh-cache'), 'miss');
    assert.equal(second.response.headers.get('x-keymesh-cache'), 'hit');
    assert.deepEqual(second.data.choices, first.data.choices);
    assert.equal(t.mock.stats().requests - before, 1);
  });
});
