import assert from 'node:assert/strict';
import { trace } from '@opentelemetry/api';
import { openAiAdapter } from '../providers/openai';
import type { OpenAiChatRequest } from '../providers/openai/types';
import type { Upstream } from '../providers/upstream';
import { RequestCancellation } from './cancellation';
import { chatAttempt } from './attempts';
import type { Attempt } from './dispatcher';

/** One attempt against a provider that answers 200 with `body`. */
function attemptAnswering(body: string): Attempt {
  const upstream = { fetch: async () => ({ kind: 'answer', statusCode: 200, headers: {}, body: Buffer.from(body) }) } as unknown as Upstream;
  const signal = new RequestCancellation();
  return {
    target: { poolId: 'main', providerId: 'mock', model: 'gpt-4o-mini' } as Attempt['target'],
    provider: { id: 'mock', adapter: openAiAdapter, upstream, timeoutMs: 1_000 },
    keyId: 'k1',
    secret: 'sk-test',
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
});
