import type { OpenAiChatChunk, OpenAiChatRequest, OpenAiChatResponse, OpenAiUsage } from '../providers/openai/types';
import type { JsonResult, StreamStart } from './attempts';
import type { Served } from './dispatcher';

/**
 * The usage reason of a request answered with a route's static degraded
 * answer: analytics counts it apart from answers a provider gave.
 */
export const DEGRADED_ANSWER_REASON = 'DEGRADED_ANSWER';

const NO_USAGE: OpenAiUsage = Object.freeze({ prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });

/** The usage reason a served request is recorded with: empty for a provider's answer. */
export function usageReasonOf(served: Pick<Served<unknown>, 'degraded'> | undefined): string {
  return served?.degraded === 'answer' ? DEGRADED_ANSWER_REASON : '';
}

/** A route's static answer as an OpenAI chat completion, for callers that did not ask to stream. */
export function degradedChatResult(req: OpenAiChatRequest, requestId: string) {
  return (answer: string): JsonResult<OpenAiChatResponse> => {
    const parsed: OpenAiChatResponse = {
      id: `chatcmpl-degraded-${requestId}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: req.model,
      choices: [{ index: 0, message: { role: 'assistant', content: answer }, finish_reason: 'stop' }],
      usage: NO_USAGE,
    };
    return { bytes: Buffer.from(JSON.stringify(parsed)), parsed, usage: NO_USAGE };
  };
}

/**
 * A route's static answer as the SSE stream a provider would send: a role
 * delta, the content, the finish, a usage chunk when the caller asked for
 * one, and [DONE]; so the edges stream it through their usual path.
 */
export function degradedChatStream(req: OpenAiChatRequest, requestId: string) {
  return (answer: string): StreamStart => {
    const base = { id: `chatcmpl-degraded-${requestId}`, object: 'chat.completion.chunk' as const, created: Math.floor(Date.now() / 1000), model: req.model };
    const chunks: OpenAiChatChunk[] = [
      { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: { content: answer }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] },
    ];
    if (req.stream_options?.include_usage === true) chunks.push({ ...base, choices: [], usage: NO_USAGE });
    const frames = Buffer.from(`${chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('')}data: [DONE]\n\n`);
    return {
      body: (async function* () {
        yield frames;
      })(),
      abort: () => undefined,
    };
  };
}
