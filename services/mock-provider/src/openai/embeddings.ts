import type { BadRequest } from './errors';
import { estimateTokens } from './tokens';

export interface EmbeddingPlan {
  kind: 'embeddings';
  model: string;
  inputs: string[];
  dimensions: number;
  base64: boolean;
  promptTokens: number;
  /** Embeddings are charged their input tokens. */
  tokenCost: number;
}

const DEFAULT_DIMENSIONS = 8;
const MAX_DIMENSIONS = 4096;

export function planEmbeddings(body: unknown): EmbeddingPlan | BadRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { message: 'The request body must be a JSON object.', param: 'body' };
  }
  const { model, input, dimensions, encoding_format: encodingFormat } = body as Record<string, unknown>;
  if (typeof model !== 'string' || model.length === 0) return { message: 'you must provide a model parameter', param: 'model' };
  const inputs = typeof input === 'string' ? [input] : input;
  if (!Array.isArray(inputs) || inputs.length === 0 || !inputs.every((item) => typeof item === 'string')) {
    return { message: "'input' must be a string or a non-empty array of strings", param: 'input' };
  }
  if (dimensions !== undefined && !(typeof dimensions === 'number' && Number.isInteger(dimensions) && dimensions >= 1 && dimensions <= MAX_DIMENSIONS)) {
    return { message: `'dimensions' must be an integer from 1 to ${MAX_DIMENSIONS}`, param: 'dimensions' };
  }
  if (encodingFormat !== undefined && encodingFormat !== 'float' && encodingFormat !== 'base64') {
    return { message: "'encoding_format' must be 'float' or 'base64'", param: 'encoding_format' };
  }
  let promptTokens = 0;
  for (const text of inputs as string[]) promptTokens += estimateTokens(text.length);
  return {
    kind: 'embeddings',
    model,
    inputs: inputs as string[],
    dimensions: dimensions ?? DEFAULT_DIMENSIONS,
    // The openai SDK asks for base64 unless told otherwise, and decodes little-endian float32.
    base64: encodingFormat === 'base64',
    promptTokens,
    tokenCost: promptTokens,
  };
}

export function embeddingsBody(plan: EmbeddingPlan): string {
  const data = plan.inputs.map((text, index) => {
    const vector = embed(text, plan.dimensions);
    const embedding = plan.base64 ? Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64') : Array.from(vector);
    return { object: 'embedding', index, embedding };
  });
  return JSON.stringify({
    object: 'list',
    data,
    model: plan.model,
    usage: { prompt_tokens: plan.promptTokens, total_tokens: plan.promptTokens },
  });
}

/**
 * A unit vector derived from FNV-1a hashes of the text, so equal inputs embed
 * equally and different inputs almost surely do not. Float32 values, so the
 * float and base64 encodings carry the same numbers.
 */
export function embed(text: string, dimensions: number): Float32Array {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i += 1) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  const vector = new Float32Array(dimensions);
  let norm = 0;
  for (let d = 0; d < dimensions; d += 1) {
    hash = Math.imul(hash ^ (d + 1), 0x01000193);
    hash ^= hash >>> 15;
    const value = (hash >>> 0) / 0xffffffff - 0.5;
    vector[d] = value;
    norm += value * value;
  }
  const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
  for (let d = 0; d < dimensions; d += 1) vector[d] *= scale;
  return vector;
}
