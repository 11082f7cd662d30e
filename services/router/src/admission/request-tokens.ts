import { costMicroUsd, type TokenPrice } from '@keymesh/config';
import { toUint32 } from '@keymesh/rpc';
import type { OpenAiChatRequest, OpenAiEmbeddingRequest, OpenAiUsage } from '../providers/openai/types';
import { completionAllowanceOf, countPromptTokens, estimateEmbeddingTokens, explicitMaxTokensOf } from './token-estimate';

/** Tokens reserved in a key's token windows for the attempt that served a request. */
export interface TokenReservation {
  readonly poolId: string;
  readonly keyId: string;
  readonly admissionId: string;
  /** micro-USD on a scope's cost pool (`cost` set), else tokens. */
  readonly reservedTokens: number;
  /** Set on a cost quota's reservation: it settles to the request's cost, not its tokens. */
  readonly cost?: true;
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
  /** The prompt's part of the estimate; the rest is the completion allowance. */
  private promptEstimate = 0;
  /** Set by the dispatcher when the attempt that served the request reserved tokens. */
  reservation: TokenReservation | undefined;
  /** Set by the dispatcher when the tenant, route or pool total the request was admitted on reserved tokens. */
  scopeReservations: TokenReservation[] | undefined;
  /** The price of the target that served the request (null: unpriced, or no provider answered). */
  servedPrice: TokenPrice | null = null;

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
    if (body.kind === 'chat') {
      this.promptEstimate = countPromptTokens(Array.isArray(body.req.messages) ? body.req.messages : []);
      // A caller's max_tokens can be any integer; the limiter's fields are uint32 (see toUint32).
      this.estimate = toUint32(this.promptEstimate + completionAllowanceOf(body.req, defaultMaxTokens));
    } else {
      this.promptEstimate = estimateEmbeddingTokens(body.req);
      this.estimate = this.promptEstimate;
    }
    return this.estimate;
  }

  /**
   * The most the request may cost at `price`, in micro-USD: its estimated
   * prompt at the input price, its completion allowance at the output price.
   */
  estimatedCost(price: TokenPrice, defaultMaxTokens: number): number {
    const total = this.estimated(defaultMaxTokens);
    return costMicroUsd(price, this.promptEstimate, total - this.promptEstimate);
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

/**
 * What a served request cost in micro-USD, from the provider's reported
 * usage at the price of the target that answered; 0 for an unpriced target,
 * a cache hit or a degraded answer.
 */
export function usageCostOf(price: TokenPrice | null, usage: OpenAiUsage | undefined): number {
  if (price === null || usage === undefined) return 0;
  return costMicroUsd(price, usage.prompt_tokens ?? 0, usage.completion_tokens ?? 0);
}
