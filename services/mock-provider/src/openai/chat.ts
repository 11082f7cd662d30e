import type { BadRequest } from './errors';
import { contentText, estimateTokens, truncate } from './tokens';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** A parsed, validated chat request and the deterministic answer it gets. */
export interface ChatPlan {
  kind: 'chat';
  model: string;
  stream: boolean;
  includeUsage: boolean;
  content: string;
  finishReason: 'stop' | 'length';
  usage: Usage;
  /** What the request is charged against token windows: prompt plus max_tokens, as OpenAI estimates at admission. */
  tokenCost: number;
}

const REPLY_PREFIX = 'mock reply to: ';
const QUOTED_CHARS = 40;

export function planChat(body: unknown): ChatPlan | BadRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { message: 'The request body must be a JSON object.', param: 'body' };
  }
  const request = body as Record<string, unknown>;
  const { model, messages, stream } = request;
  if (typeof model !== 'string' || model.length === 0) return { message: 'you must provide a model parameter', param: 'model' };
  if (!Array.isArray(messages) || messages.length === 0) {
    return { message: "'messages' must be a non-empty array", param: 'messages' };
  }
  // max_completion_tokens replaced max_tokens in OpenAI's API; clients send either.
  const maxParam = request.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = request[maxParam];
  if (maxTokens !== undefined && maxTokens !== null && !(typeof maxTokens === 'number' && Number.isInteger(maxTokens) && maxTokens >= 1)) {
    return { message: `'${maxParam}' must be an integer of at least 1`, param: maxParam };
  }

  let promptChars = 0;
  let lastUserText: string | undefined;
  let lastText = '';
  for (const message of messages as unknown[]) {
    if (message === null || typeof message !== 'object') return { message: 'each message must be an object', param: 'messages' };
    const { role, content } = message as { role?: unknown; content?: unknown };
    const text = contentText(content);
    promptChars += text.length;
    lastText = text;
    if (role === 'user') lastUserText = text;
  }

  let content = REPLY_PREFIX + truncate(lastUserText ?? lastText, QUOTED_CHARS);
  let completionTokens = estimateTokens(content.length);
  let finishReason: ChatPlan['finishReason'] = 'stop';
  if (typeof maxTokens === 'number' && completionTokens > maxTokens) {
    content = truncate(content, maxTokens * 4);
    completionTokens = maxTokens;
    finishReason = 'length';
  }
  const promptTokens = estimateTokens(promptChars);
  const streamOptions = request.stream_options as { include_usage?: unknown } | null | undefined;
  return {
    kind: 'chat',
    model,
    stream: stream === true,
    includeUsage: stream === true && streamOptions?.include_usage === true,
    content,
    finishReason,
    usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
    tokenCost: promptTokens + (typeof maxTokens === 'number' ? maxTokens : completionTokens),
  };
}

export function completionBody(plan: ChatPlan, id: string, createdSeconds: number): string {
  return JSON.stringify({
    id,
    object: 'chat.completion',
    created: createdSeconds,
    model: plan.model,
    choices: [
      { index: 0, message: { role: 'assistant', content: plan.content, refusal: null }, logprobs: null, finish_reason: plan.finishReason },
    ],
    usage: plan.usage,
  });
}

/**
 * The SSE frames of one streamed answer, in order: the role delta, `chunks` content
 * deltas, the finish chunk, the usage chunk if asked for, then `[DONE]`. The
 * content deltas are frames 1..chunks, which is where a cut stream stops.
 */
export function streamFrames(plan: ChatPlan, id: string, createdSeconds: number, chunks: number): string[] {
  const head = `{"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${createdSeconds},"model":${JSON.stringify(plan.model)},`;
  // With include_usage OpenAI sends `usage: null` on every chunk but the last.
  const tail = plan.includeUsage ? ',"usage":null}' : '}';
  const frame = (choice: object): string => `data: ${head}"choices":[${JSON.stringify(choice)}]${tail}\n\n`;

  const frames: string[] = [frame({ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null })];
  const { content } = plan;
  for (let i = 0; i < chunks; i += 1) {
    const piece = content.slice(Math.floor((i * content.length) / chunks), Math.floor(((i + 1) * content.length) / chunks));
    frames.push(frame({ index: 0, delta: { content: piece }, logprobs: null, finish_reason: null }));
  }
  frames.push(frame({ index: 0, delta: {}, logprobs: null, finish_reason: plan.finishReason }));
  if (plan.includeUsage) frames.push(`data: ${head}"choices":[],"usage":${JSON.stringify(plan.usage)}}\n\n`);
  frames.push('data: [DONE]\n\n');
  return frames;
}
