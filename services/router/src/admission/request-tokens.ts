import type { OpenAiChatRequest, OpenAiEmbeddingRequest, OpenAiUsage } from '../providers/openai/types';
import { estimateChatTokens, estimateEmbeddingTokens, explicitMaxTokensOf } from './token-estimate';

/** Tokens reserved in a key's token windows for the attempt that served a request. */
export interface TokenReservation {
  readonly poolId: string;
  readonly keyId: string;
  readonly admissionId: string;
  readonly reservedTokens: number;
}

type Body = { readonly kind: 'chat'; readonly req: OpenAiChatRequest } | { readonly kind: 'embeddings'; readonly req: OpenAiEmbeddingRequest };

/**
 * One request's token accounting. The edge hands over the body it already
 * parsed (no copy, no second parse); the tokenizer runs only when the
 * dispatcher admits on a pool with token limits, and at most once.
 */
export class RequestTokens {
  private body: Body | undefined;
  private estimate: number | undefined;
  /** Set by the dispatcher when the attempt that served the request reserved tokens. */
  reservation: TokenReservation | undefined;
  /** Set by the dispatcher when the tenant, route or pool total the request was admitted on reserved tokens. */
  scopeReservations: TokenReservation[] | undefined;

  forChat(req: OpenAiChatRequest): void {
    this.body = { kind: 'chat', req };
  }

  forEmbeddings(req: OpenAiEmbeddingRequest): void {
    this.body = { kind: 'embeddings', req };
  }

  /** The estimate to reserve; 0 before a body was given (the settle then records what was used). */
  estimated(defaultMaxTokens: number): number {
    if (this.estimate !== undefined) return this.estimate;
    const body = this.body;
    if (body === undefined) return 0;
    this.estimate = body.kind === 'chat' ? estimateChatTokens(body.req, defaultMaxTokens) : estimateEmbeddingTokens(body.req);
    return this.estimate;
  }

  /**
   * What the provider charged the key, from its reported usage; undefined
   * when it reported none (a stream cut short): the reservation then stands.
   * A completion allowance the caller set explicitly is charged in full, as
   * OpenAI counts max_tokens against tokens per minute whatever the reply's
   * length; refunding it would let keymesh send what the provider refuses.
   */
  usedTokensOf(usage: OpenAiUsage | undefined): number | undefined {
    if (usage === undefined || typeof usage.prompt_tokens !== 'number') return undefined;
    const body = this.body;
    const allowance = body?.kind === 'chat' ? explicitMaxTokensOf(body.req) : undefined;
    const completion = typeof usage.completion_tokens === 'number' ? usage.completion_tokens : 0;
    return usage.prompt_tokens + Math.max(completion, allowance ?? 0);
  }
}
