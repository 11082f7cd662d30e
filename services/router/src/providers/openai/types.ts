// OpenAI's chat completions wire types: the subset keymesh reads or writes.
// keymesh's internal request currency is this shape, since every SDK speaks it;
// adapters for other providers translate from it.

export interface OpenAiChatMessage {
  role: string;
  content: string | null | OpenAiContentPart[];
  name?: string;
  [extra: string]: unknown;
}

export interface OpenAiContentPart {
  type: string;
  text?: string;
  [extra: string]: unknown;
}

export interface OpenAiChatRequest {
  model: string;
  messages: OpenAiChatMessage[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  max_tokens?: number;
  max_completion_tokens?: number;
  temperature?: number;
  top_p?: number;
  stop?: string | string[];
  seed?: number;
  user?: string;
  [extra: string]: unknown;
}

export interface OpenAiUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface OpenAiChatResponse {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: { index: number; message: OpenAiChatMessage; finish_reason: string | null }[];
  usage?: OpenAiUsage;
}

export interface OpenAiChatChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: { index: number; delta: { role?: string; content?: string | null }; finish_reason: string | null }[];
  usage?: OpenAiUsage | null;
}

export interface OpenAiEmbeddingRequest {
  model: string;
  input: string | string[] | number[] | number[][];
  dimensions?: number;
  encoding_format?: 'float' | 'base64';
  user?: string;
  [extra: string]: unknown;
}

export interface OpenAiEmbeddingResponse {
  object: 'list';
  data: { object: 'embedding'; index: number; embedding: number[] | string }[];
  model: string;
  usage?: { prompt_tokens: number; total_tokens: number };
}

export interface OpenAiErrorBody {
  error?: { message?: string; type?: string; code?: string | null; param?: string | null };
}
