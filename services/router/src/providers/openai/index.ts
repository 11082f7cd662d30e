import type { ProviderAdapter, ProviderHttpRequest } from '../adapter';
import { classifyOpenAi } from './errors';
import { readOpenAiLimits } from './limits';
import type { OpenAiChatChunk, OpenAiChatRequest, OpenAiChatResponse, OpenAiEmbeddingRequest, OpenAiEmbeddingResponse, OpenAiUsage } from './types';

function jsonRequest(path: string, body: string | Buffer, secret: string): ProviderHttpRequest {
  return {
    path,
    headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
    body,
  };
}

/** The caller's bytes when nothing changes; one stringify when the route maps the model. */
function bodyFor<T extends { model: string }>(req: T, rawBody: Buffer | undefined, model: string): string | Buffer {
  if (rawBody !== undefined && req.model === model) return rawBody;
  return JSON.stringify({ ...req, model });
}

/** OpenAI and every OpenAI-compatible server (vLLM, Ollama, keymesh's mock). */
export const openAiAdapter: ProviderAdapter = {
  kind: 'openai',

  chatRequest(req: OpenAiChatRequest, rawBody: Buffer | undefined, model: string, secret: string) {
    return jsonRequest('/chat/completions', bodyFor(req, rawBody, model), secret);
  },

  chatResponse(body: unknown): OpenAiChatResponse {
    return body as OpenAiChatResponse;
  },

  streamUsage(data: string): OpenAiUsage | undefined {
    // Only the final chunk carries usage; skip the parse for every other one.
    if (!data.includes('"usage":{')) return undefined;
    try {
      const chunk = JSON.parse(data) as OpenAiChatChunk;
      return chunk.usage ?? undefined;
    } catch {
      return undefined;
    }
  },

  streamChunk(data: string): OpenAiChatChunk | undefined {
    if (data === '[DONE]') return undefined;
    try {
      return JSON.parse(data) as OpenAiChatChunk;
    } catch {
      return undefined;
    }
  },

  embeddingRequest(req: OpenAiEmbeddingRequest, rawBody: Buffer | undefined, model: string, secret: string) {
    return jsonRequest('/embeddings', bodyFor(req, rawBody, model), secret);
  },

  embeddingResponse(body: unknown): OpenAiEmbeddingResponse {
    return body as OpenAiEmbeddingResponse;
  },

  readLimits: readOpenAiLimits,
  classify: (status, headers, body) => classifyOpenAi(status, headers, body),
};
