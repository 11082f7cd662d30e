import assert from 'node:assert/strict';
import { trace } from '@opentelemetry/api';
import { openAiAdapter } from '../providers/openai';
import type { OpenAiChatRequest } from '../providers/openai/types';
import type { Upstream } from '../providers/upstream';
import { RequestCancellation } from './cancellation';
import { chatAttempt } from './attempts';
import type { Attempt } from './dispatcher';

/** One attempt against a provider that answers `statusCode` (200 unless given) with `body`. */
function attemptAnswering(body: string, statusCode = 200, secret = 'sk-test'): Attempt {
  const upstream = { fetch: async () => ({ kind: 'answer', statusCode, headers: {}, body: Buffer.from(body) }) } as unknown as Upstream;
  const signal = new RequestCancellation();
  return {
    target: { poolId: 'main', providerId: 'mock', model: 'gpt-4o-mini' } as Attempt['target'],
    provider: { id: 'mock', adapter: openAiAdapter, upstream, timeoutMs: 1_000 },
    keyId: 'k1',
    secret,
    number: 1,
    signal,
    requestSignal: signal,
    span: trace.wrapSpanContext({ traceId: '1'.repeat(32), spanId: '1'.repeat(16), traceFlags: 1 }),
  };
}

const request: OpenAiChatRequest = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };

describe('a chat attempt', () => {
  it('reads the usage out of the answer and keeps its bytes as they came', async () => {
    const body = '{"id":"c1","model":"gpt-4o-mini-2024","choices":[{"index":0,"message":{"role":"assistant","content":"\\"usage\\""},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}';
    const result = await chatAttempt(request, undefined)(attemptAnswering(body));
    assert.ok(result.ok);
    assert.equal(result.value.bytes.toString(), body);
    assert.deepEqual(result.value.usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
    assert.equal(result.value.parsed.choices[0].message.content, '"usage"');
  });

  it('fails over like an outage when a 200 carries no JSON object', async () => {
    for (const body of ['<html>bad gateway</html>', '{"id":"c1","choices":[', '', '"a string"', 'null', '[]']) {
      const result = await chatAttempt(request, undefined)(attemptAnswering(body));
      assert.equal(result.ok, false, body);
      assert.ok(!result.ok && result.failure.kind === 'unavailable' && result.failure.status === 502, body);
    }
  });

  it('never hands on the key it sent, whatever its shape, when the provider quotes it in an error', async () => {
    // One the key-like pattern does not know, and one it knows only the start of.
    for (const secret of ['gsk_0123456789abcdefSECRET', 'key-abc12345+def/ghi=']) {
      const body = JSON.stringify({ error: { message: `Invalid header: Authorization=Bearer ${secret}`, type: 'invalid_request_error' } });
      const result = await chatAttempt(request, undefined)(attemptAnswering(body, 400, secret));
      assert.ok(!result.ok && result.failure.kind === 'rejected');
      assert.equal(result.failure.message, 'Invalid header: Authorization=Bearer [redacted]', secret);
    }
  });

  it('takes an error whose message is not text as the status alone, still the caller\'s 4xx', async () => {
    const result = await chatAttempt(request, undefined)(attemptAnswering(JSON.stringify({ error: { message: ['a', 'b'] } }), 400));
    assert.ok(!result.ok);
    assert.deepEqual([result.failure.kind, result.failure.status, result.failure.message], ['rejected', 400, 'provider answered HTTP 400']);
  });

  it('fails over when the provider answers a redirect or another 2xx, which is no answer to a chat call', async () => {
    for (const status of [201, 204, 302]) {
      const result = await chatAttempt(request, undefined)(attemptAnswering('{}', status));
      assert.ok(!result.ok && result.failure.kind === 'unavailable' && result.failure.status === 502, String(status));
    }
  });

  it('passes on a rejected request\'s provider code and param when they are identifiers without the key', async () => {
    const secret = 'gsk_0123456789abcdefSECRET';
    const rejected = async (error: Record<string, unknown>) => {
      const result = await chatAttempt(request, undefined)(attemptAnswering(JSON.stringify({ error: { message: 'no', ...error } }), 400, secret));
      assert.ok(!result.ok);
      return [result.failure.code, result.failure.param];
    };
    assert.deepEqual(await rejected({ code: 'context_length_exceeded', param: 'messages' }), ['context_length_exceeded', 'messages']);
    assert.deepEqual(await rejected({ code: `bad_${secret}`, param: 'messages[0].content' }), ['bad_[redacted]', 'messages[0].content']);
    assert.deepEqual(await rejected({ code: 'sk-abcdef123456', param: 'has spaces' }), [undefined, undefined]);
    assert.deepEqual(await rejected({ code: 42, param: null }), [undefined, undefined]);
  });
});
