import assert from 'node:assert/strict';
import { create, toBinary } from '@bufbuild/protobuf';
import { AcquireBatchRequestSchema } from '@keymesh/proto/limiter/v1/limiter';
import { UINT32_MAX } from '@keymesh/rpc';
import { encodeChat } from 'gpt-tokenizer/encoding/o200k_base';
import { countPromptTokens, estimateEmbeddingTokens } from './token-estimate';
import type { OpenAiChatMessage, OpenAiChatRequest } from '../providers/openai/types';
import { RequestTokens } from './request-tokens';

/** What a chat request reserves, as the dispatcher asks for it. */
function estimateChatTokens(req: OpenAiChatRequest, defaultMaxTokens: number): number {
  const tokens = new RequestTokens();
  tokens.forChat(req);
  return tokens.estimated(defaultMaxTokens);
}

describe('token estimates', () => {
  it('counts prompt tokens with o200k_base: known values for short texts plus the chat framing', () => {
    // o200k_base: "hello world" is 2 tokens, "Hello, how are you today?" 7, "user" and "system" 1 each;
    // each message adds 3 tokens of framing and the reply is primed with 3.
    assert.equal(countPromptTokens([{ role: 'user', content: 'hello world' }]), 3 + 3 + 1 + 2);
    assert.equal(
      countPromptTokens([
        { role: 'system', content: 'hello world' },
        { role: 'user', content: 'Hello, how are you today?' },
      ]),
      3 + (3 + 1 + 2) + (3 + 1 + 7),
    );
  });

  it('estimates at most what a limiter message can carry, so a huge max_tokens is one denial, not a failed batch', () => {
    const tokens = new RequestTokens();
    tokens.forChat({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5_000_000_000 });
    assert.equal(tokens.estimated(256), UINT32_MAX);
    // The whole AcquireBatch encodes (one request's estimate used to make it throw).
    assert.doesNotThrow(() => toBinary(AcquireBatchRequestSchema, create(AcquireBatchRequestSchema, { requests: [{ poolId: 'p', estimatedTokens: tokens.estimated(256) }] })));
  });

  it('counts content parts as the caller sent them, a missing or odd part as a non-text one, without throwing', () => {
    const parts = [null, 'text', { type: 'image_url' }] as unknown as OpenAiChatMessage['content'];
    assert.equal(countPromptTokens([{ role: 'user', content: parts }]), countPromptTokens([{ role: 'user', content: [{ type: 'image_url' }, { type: 'image_url' }, { type: 'image_url' }] as OpenAiChatMessage['content'] }]));
  });

  it('agrees with the tokenizer\'s own chat encoding for gpt-4o', () => {
    const messages = [
      { role: 'system' as const, content: 'You are a terse assistant.' },
      { role: 'user' as const, content: 'The quick brown fox jumps over the lazy dog. Why?' },
      { role: 'assistant' as const, content: 'Because it could.' },
    ];
    assert.equal(countPromptTokens(messages), encodeChat(messages, 'gpt-4o').length);
  });

  it('counts the text parts of multi-part content and a fixed amount for other parts', () => {
    assert.equal(
      countPromptTokens([{ role: 'user', content: [{ type: 'text', text: 'hello world' }, { type: 'image_url', image_url: { url: 'data:,' } }] }]),
      3 + 3 + 1 + 2 + 85,
    );
  });

  it('adds max_completion_tokens, else max_tokens, else the route default', () => {
    const messages = [{ role: 'user', content: 'hello world' }];
    assert.equal(estimateChatTokens({ model: 'm', messages, max_completion_tokens: 50, max_tokens: 10 }, 1024), 9 + 50);
    assert.equal(estimateChatTokens({ model: 'm', messages, max_tokens: 10 }, 1024), 9 + 10);
    assert.equal(estimateChatTokens({ model: 'm', messages }, 1024), 9 + 1024);
  });

  it('prices the estimate: the counted prompt at the input price, the completion allowance at the output price', () => {
    const tokens = new RequestTokens();
    tokens.forChat({ model: 'm', messages: [{ role: 'user', content: 'hello world' }], max_tokens: 10 });
    assert.equal(tokens.estimatedCost({ input: 3, output: 5 }, 1024), 9 * 3 + 10 * 5);
    assert.equal(tokens.estimated(1024), 19);
  });

  it('counts embedding inputs: texts by the tokenizer, token ids as they are', () => {
    assert.equal(estimateEmbeddingTokens({ model: 'e', input: 'hello world' }), 2);
    assert.equal(estimateEmbeddingTokens({ model: 'e', input: ['hello world', 'Hello, how are you today?'] }), 9);
    assert.equal(estimateEmbeddingTokens({ model: 'e', input: [[1, 2, 3], [4]] }), 4);
  });

  describe('RequestTokens', () => {
    it('reserves nothing before it knows the body, and tokenizes a body once', () => {
      const tokens = new RequestTokens();
      assert.equal(tokens.estimated(100), 0);
      const req = { model: 'm', messages: [{ role: 'user', content: 'hello world' }] };
      tokens.forChat(req);
      assert.equal(tokens.estimated(100), 109);
      req.messages[0]!.content = 'changed after the estimate';
      assert.equal(tokens.estimated(100), 109);
    });

    it('charges an explicit max_tokens in full, as the provider does, and the reported completion otherwise', () => {
      const explicit = new RequestTokens();
      explicit.forChat({ model: 'm', messages: [], max_tokens: 200 });
      assert.equal(explicit.usedTokensOf({ prompt_tokens: 12, completion_tokens: 30, total_tokens: 42 }), 212);
      const implicit = new RequestTokens();
      implicit.forChat({ model: 'm', messages: [] });
      assert.equal(implicit.usedTokensOf({ prompt_tokens: 12, completion_tokens: 30, total_tokens: 42 }), 42);
      assert.equal(implicit.usedTokensOf(undefined), undefined);
    });
  });
});
