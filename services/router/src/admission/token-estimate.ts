import type * as O200kBase from 'gpt-tokenizer/encoding/o200k_base';
import type { OpenAiChatMessage, OpenAiChatRequest, OpenAiEmbeddingRequest } from '../providers/openai/types';

// OpenAI's chat format wraps every message in a few tokens of framing
// (<|im_start|>role ... <|im_end|>) and primes the reply with a few more; the
// provider counts them, so leaving them out would under-reserve every request.
const TOKENS_PER_MESSAGE = 3;
const TOKENS_PER_NAME = 1;
const REPLY_PRIMING_TOKENS = 3;
// A non-text part (an image, audio) has no text to count; OpenAI charges at
// least this much for a low-detail image. A settle corrects the rest.
const NON_TEXT_PART_TOKENS = 85;

// The encoder's tables take ~70 MB of memory: most configs have no token
// limit and never count a token, so it loads only once a config needs it.
let encoder: typeof O200kBase | undefined;

/**
 * Loads the tokenizer now (synchronous file reads), so the first request that
 * counts tokens doesn't pay for it on the hot path. Called when a config with
 * token limits is applied; counting without it loads it on first use.
 */
export function loadTokenizer(): void {
  countTokens('');
}

function countTokens(text: string): number {
  encoder ??= require('gpt-tokenizer/encoding/o200k_base') as typeof O200kBase;
  return encoder.countTokens(text);
}

/**
 * The prompt tokens of a chat request, counted with o200k_base (the encoding
 * of gpt-4o and later). Other models' tokenizers differ a little; the settle
 * corrects the reservation to what the provider reports.
 */
export function countPromptTokens(messages: readonly OpenAiChatMessage[]): number {
  let tokens = REPLY_PRIMING_TOKENS;
  for (const message of messages) {
    tokens += TOKENS_PER_MESSAGE;
    if (typeof message.role === 'string') tokens += countTokens(message.role);
    if (typeof message.name === 'string') tokens += TOKENS_PER_NAME + countTokens(message.name);
    const content = message.content;
    if (typeof content === 'string') tokens += countTokens(content);
    else if (Array.isArray(content)) {
      // Parts are as the caller sent them (the provider judges them): anything but a text part counts as an image's share.
      for (const part of content) tokens += typeof part?.text === 'string' ? countTokens(part.text) : NON_TEXT_PART_TOKENS;
    }
  }
  return tokens;
}

/**
 * The completion tokens the caller allowed: max_completion_tokens (the newer
 * name) or max_tokens, else the route's default. Providers count this
 * allowance against the key's tokens per minute when the request arrives.
 */
export function completionAllowanceOf(req: OpenAiChatRequest, defaultMaxTokens: number): number {
  return explicitMaxTokensOf(req) ?? defaultMaxTokens;
}

/** max_completion_tokens or max_tokens when the caller set one (a positive whole number); else undefined. */
export function explicitMaxTokensOf(req: OpenAiChatRequest): number | undefined {
  const value = req.max_completion_tokens ?? req.max_tokens;
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : undefined;
}

/** An embeddings request uses only its input: text is counted, token ids are already tokens. */
export function estimateEmbeddingTokens(req: OpenAiEmbeddingRequest): number {
  const input = req.input;
  if (typeof input === 'string') return countTokens(input);
  if (!Array.isArray(input)) return 0;
  let tokens = 0;
  for (const item of input) {
    if (typeof item === 'string') tokens += countTokens(item);
    else if (typeof item === 'number') tokens += 1;
    else if (Array.isArray(item)) tokens += item.length;
  }
  return tokens;
}
