import { randomUUID } from 'node:crypto';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import {
  type ChatStreamRequest,
  type EmbedRequest,
  type EmbedResponseSchema,
  type ChatMessage,
  type ChatParameters,
  type ChatStreamResponseSchema,
  type RouterService,
  Priority,
} from '@keymesh/proto/router/v1/router';
import type { CallContext, ServiceImpl } from '@keymesh/rpc';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { BreakerScope, BreakerState, type BreakerSchema } from '@keymesh/proto/router/v1/router';
import type { BreakerBoard, BreakerSnapshot } from './resilience';
import { providersOfPools } from './metrics/metrics';
import type { OpenAiChatRequest, OpenAiChatResponse, OpenAiUsage } from './providers/openai/types';
import { adapterFor } from './providers';
import { chatStreamAttempt, embeddingAttempt } from './routing/attempts';
import { degradedChatStream, usageReasonOf } from './routing/degraded';
import { RequestTokens } from './admission/request-tokens';
import type { Dispatcher, RequestScope } from './routing/dispatcher';
import type { Gateway } from './routing/gateway';
import type { RouteTable } from './routing/route-table';
import type { ConcurrencyGuard, ReleaseSlot } from './guards/concurrency';
import { SseDataReader } from './edge/sse';
import { priorityFromProto } from './admission/priority';
import { DeadlineCancellation } from './routing/cancellation';

export interface RouterHandlerDeps {
  table: () => RouteTable;
  gateway: Gateway;
  dispatcher: Dispatcher;
  /** The same bulkheads as the HTTP edge: gRPC callers count against the caps too. */
  concurrency: ConcurrencyGuard;
  /** This replica's circuit breakers, for GetBreakerState. */
  breakers: BreakerBoard;
}

function toOpenAi(model: string, messages: ChatMessage[], parameters: ChatParameters | undefined, stream: boolean): OpenAiChatRequest {
  if (messages.length === 0) {
    throw KeymeshError.invalidRequest('messages must not be empty', 'messages');
  }
  const req: OpenAiChatRequest = {
    model,
    messages: messages.map((m) => (m.name ? { role: m.role, content: m.content, name: m.name } : { role: m.role, content: m.content })),
  };
  if (stream) {
    req.stream = true;
    req.stream_options = { include_usage: true };
  }
  if (parameters) {
    if (parameters.temperature !== undefined) req.temperature = parameters.temperature;
    if (parameters.topP !== undefined) req.top_p = parameters.topP;
    if (parameters.maxTokens !== undefined) req.max_tokens = parameters.maxTokens;
    if (parameters.stops.length > 0) req.stop = parameters.stops;
    if (parameters.seed !== undefined) req.seed = Number(parameters.seed);
    if (parameters.user) req.user = parameters.user;
  }
  return req;
}

function usageOf(usage: OpenAiUsage | undefined | null) {
  return usage
    ? { promptTokens: usage.prompt_tokens, completionTokens: usage.completion_tokens, totalTokens: usage.total_tokens }
    : undefined;
}

function contentOf(content: OpenAiChatResponse['choices'][number]['message']['content']): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => p.text ?? '').join('');
  return '';
}

/** RouterService over gRPC: the same gateway as the HTTP edge, proto in and out. */
export function routerHandlers(deps: RouterHandlerDeps): ServiceImpl<typeof RouterService> {
  /** Authenticates, resolves the route and takes its bulkhead slots; the caller must call release. */
  const begin = (ctx: CallContext, model: string, priority: Priority = Priority.UNSPECIFIED): { scope: RequestScope; startedMs: number; release: ReleaseSlot } => {
    const tenantId = deps.gateway.authenticate(ctx.header('authorization'));
    const route = deps.gateway.resolveRoute(model);
    const requestId = randomUUID();
    ctx.setTrailer('x-keymesh-request-id', requestId);
    const deadlineMs = Math.min(ctx.deadlineMs ?? Infinity, Date.now() + route.timeoutMs);
    // First, so that a full bulkhead (it throws) leaves no timer behind.
    const releaseSlot = deps.concurrency.acquire(route, tenantId);
    // Held until release, as on the HTTP edge (see DeadlineCancellation); the call's own end is forwarded.
    const signal = new DeadlineCancellation(Math.max(0, deadlineMs - Date.now()));
    const onCallEnded = (): void => signal.abort(ctx.signal.reason);
    if (ctx.signal.aborted) onCallEnded();
    else ctx.signal.addEventListener('abort', onCallEnded, { once: true });
    const release = (): void => {
      signal.end();
      ctx.signal.removeEventListener('abort', onCallEnded);
      releaseSlot();
    };
    return { scope: { requestId, tenantId, route, deadlineMs, signal, traceContext: ctx.traceContext, tokens: new RequestTokens(), priority: priorityFromProto(priority) }, startedMs: Date.now(), release };
  };
  const served = (ctx: CallContext, s: { target: { providerId: string; model: string }; keyId: string; attempts: number; degraded?: string }): void => {
    ctx.setTrailer('x-keymesh-provider', s.target.providerId);
    ctx.setTrailer('x-keymesh-model', s.target.model);
    ctx.setTrailer('x-keymesh-key-id', s.keyId);
    ctx.setTrailer('x-keymesh-attempts', String(s.attempts));
    if (s.degraded !== undefined) ctx.setTrailer('x-keymesh-degraded', 'true');
  };
  const failed = (err: unknown, scope: RequestScope, startedMs: number): never => {
    const error = KeymeshError.from(err);
    deps.gateway.recordUsage(scope, startedMs, {
      model: '', providerId: '', keyId: '', usage: undefined, status: 0, attempts: 0, cached: false, streamed: false, errorReason: error.reason,
    });
    throw error;
  };

  return {
    async chat(request, ctx) {
      const { scope, startedMs, release } = begin(ctx, request.model, request.priority);
      try {
        const body = toOpenAi(request.model, request.messages, request.parameters, false);
        scope.tokens?.forChat(body);
        const { result, served: s } = await deps.gateway.chat(scope, body, undefined, 'use');
        if (s) served(ctx, s);
        ctx.setTrailer('x-keymesh-cache', s ? 'miss' : 'hit');
        deps.gateway.recordUsage(scope, startedMs, {
          model: result.parsed.model, providerId: s?.target.providerId ?? '', keyId: s?.keyId ?? '', usage: result.usage,
          status: 200, attempts: s?.attempts ?? 0, cached: s === undefined, streamed: false, errorReason: usageReasonOf(s),
        });
        return {
          id: result.parsed.id,
          model: result.parsed.model,
          choices: result.parsed.choices.map((c) => ({
            index: c.index,
            message: { role: c.message.role, content: contentOf(c.message.content) },
            finishReason: c.finish_reason ?? '',
          })),
          usage: usageOf(result.usage),
        };
      } catch (err) {
        return failed(err, scope, startedMs);
      } finally {
        release();
      }
    },

    async *chatStream(request, ctx) {
      const { scope, startedMs, release } = begin(ctx, request.model, request.priority);
      // Held until the last delta, the caller leaving, or a failure.
      try {
        yield* streamDeltas(scope, startedMs, request, ctx);
      } finally {
        release();
      }
    },

    async embed(request, ctx) {
      const { scope, startedMs, release } = begin(ctx, request.model);
      try {
        return await embedWith(scope, startedMs, request, ctx);
      } finally {
        release();
      }
    },

    async listModels(_request, ctx) {
      deps.gateway.authenticate(ctx.header('authorization'));
      return { models: [...deps.table().routes.keys()].map((id) => ({ id, ownedBy: 'keymesh' })) };
    },

    async getBreakerState() {
      const providerOfPool = providersOfPools(deps.table());
      return { breakers: deps.breakers.snapshot().map((b) => breakerOf(b, providerOfPool)) };
    },
  };

  async function* streamDeltas(scope: RequestScope, startedMs: number, request: ChatStreamRequest, ctx: CallContext): AsyncGenerator<MessageInitShape<typeof ChatStreamResponseSchema>> {
    let usage: OpenAiUsage | undefined;
    let s;
    try {
      const body = toOpenAi(request.model, request.messages, request.parameters, true);
      scope.tokens?.forChat(body);
      s = await deps.dispatcher.run(scope, chatStreamAttempt(body, undefined), degradedChatStream(body, scope.requestId));
    } catch (err) {
      return failed(err, scope, startedMs);
    }
    served(ctx, s);
    // A static degraded answer has no provider; it is framed as OpenAI's stream.
    const adapter = deps.table().providers.get(s.target.providerId)?.adapter ?? adapterFor('openai');
    const reader = new SseDataReader();
    let errorReason = '';
    try {
      for await (const chunk of s.value.body) {
        for (const data of reader.push(chunk.toString('utf8'))) {
          const parsed = adapter?.streamChunk(data);
          if (!parsed) continue;
          if (parsed.usage) usage = parsed.usage;
          for (const choice of parsed.choices) {
            const message: MessageInitShape<typeof ChatStreamResponseSchema> = {
              id: parsed.id,
              model: parsed.model,
              index: choice.index,
              role: choice.delta.role ?? '',
              contentDelta: choice.delta.content ?? '',
              finishReason: choice.finish_reason ?? '',
            };
            yield message;
          }
          if (parsed.usage && parsed.choices.length === 0) yield { id: parsed.id, model: parsed.model, usage: usageOf(parsed.usage) };
        }
      }
    } catch (err) {
      s.value.abort();
      // The provider cut the stream, or the deadline passed: a caller still there hears which (a
      // truncated stream must not end with OK), as on the HTTP edge. One that left hears nothing.
      const ended = scope.signal.aborted ? KeymeshError.from(scope.signal.reason) : undefined;
      if (ended?.code === Code.Cancelled) {
        errorReason = Reason.CANCELLED;
      } else {
        const error = ended ?? new KeymeshError({ code: Code.Unavailable, reason: Reason.PROVIDER_ERROR, message: 'the provider ended the stream early', cause: err });
        errorReason = error.reason;
        throw error;
      }
    } finally {
      if (scope.signal.aborted) s.value.abort();
      deps.gateway.recordUsage(scope, startedMs, {
        model: s.target.model, providerId: s.target.providerId, keyId: s.keyId, usage, status: errorReason ? 502 : 200,
        attempts: s.attempts, cached: false, streamed: true, errorReason: errorReason || usageReasonOf(s),
      });
    }
  }

  async function embedWith(scope: RequestScope, startedMs: number, request: EmbedRequest, ctx: CallContext): Promise<MessageInitShape<typeof EmbedResponseSchema>> {
    if (request.inputs.length === 0) {
      throw KeymeshError.invalidRequest('inputs must not be empty', 'inputs');
    }
    try {
      const body = { model: request.model, input: request.inputs, ...(request.dimensions !== undefined ? { dimensions: request.dimensions } : {}) };
      scope.tokens?.forEmbeddings(body);
      const s = await deps.dispatcher.run(scope, embeddingAttempt(body, undefined));
      served(ctx, s);
      const usage = s.value.usage;
      deps.gateway.recordUsage(scope, startedMs, {
        model: s.value.parsed.model, providerId: s.target.providerId, keyId: s.keyId,
        usage: usage ? { prompt_tokens: usage.prompt_tokens, completion_tokens: 0, total_tokens: usage.total_tokens } : undefined,
        status: 200, attempts: s.attempts, cached: false, streamed: false, errorReason: '',
      });
      return {
        model: s.value.parsed.model,
        embeddings: s.value.parsed.data.map((d) => ({ index: d.index, values: Array.isArray(d.embedding) ? d.embedding : [] })),
        usage: usage ? { promptTokens: usage.prompt_tokens, totalTokens: usage.total_tokens } : undefined,
      };
    } catch (err) {
      return failed(err, scope, startedMs);
    }
  }
}

const BREAKER_STATE: Record<BreakerSnapshot['state'], BreakerState> = {
  closed: BreakerState.CLOSED,
  half_open: BreakerState.HALF_OPEN,
  open: BreakerState.OPEN,
};

function breakerOf(b: BreakerSnapshot, providerOfPool: ReadonlyMap<string, string>): MessageInitShape<typeof BreakerSchema> {
  return {
    scope: b.scope === 'provider' ? BreakerScope.PROVIDER : BreakerScope.KEY,
    providerId: b.providerId ?? providerOfPool.get(b.poolId ?? '') ?? '',
    poolId: b.poolId ?? '',
    keyId: b.keyId ?? '',
    state: BREAKER_STATE[b.state],
    since: timestampFromMs(b.sinceMs),
    reason: b.reason ?? '',
    ...(b.openUntilMs === undefined ? {} : { openUntil: timestampFromMs(b.openUntilMs) }),
  };
}
