import { createHash } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import { DurationSchema, timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { PolicyRoute } from '@keymesh/config';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { CacheService } from '@keymesh/proto/cache/v1/cache';
import { durationOfMs, msOfDuration, type RpcClient } from '@keymesh/rpc';
import type { Logger } from '@keymesh/telemetry';
import type { OpenAiChatRequest, OpenAiChatResponse, OpenAiUsage } from '../providers/openai/types';
import { chatAttempt, type JsonResult } from './attempts';
import { degradedChatResult } from './degraded';
import type { Dispatcher, RequestScope, Served } from './dispatcher';
import type { RouteTable } from './route-table';
import type { UsageRecorder } from '../usage/usage-recorder';
import type { SettleBatcher } from '../admission/settle-batcher';
import { usageCostOf } from '../admission/request-tokens';

export interface UsageRecord {
  model: string;
  providerId: string;
  keyId: string;
  usage: OpenAiUsage | undefined;
  status: number;
  attempts: number;
  cached: boolean;
  streamed: boolean;
  errorReason: string;
}

export type CacheDirective = 'use' | 'refresh' | 'bypass';

export interface ChatOutcome {
  readonly result: JsonResult<OpenAiChatResponse>;
  /** Undefined when the answer came from the cache. */
  readonly served: Served<JsonResult<OpenAiChatResponse>> | undefined;
}

export interface GatewayDeps {
  table: () => RouteTable;
  dispatcher: Dispatcher;
  cache: RpcClient<typeof CacheService>;
  usage: UsageRecorder;
  /** Corrects token reservations to the usage providers report. */
  settles: SettleBatcher;
  logger: Logger;
}

/** What both edges (HTTP and gRPC) do around the dispatcher: auth, routes, cache, usage. */
export class Gateway {
  constructor(private readonly deps: GatewayDeps) {}

  /** The tenant of a virtual key from `Authorization: Bearer <key>`. */
  authenticate(authorization: string | undefined): string {
    const token = authorization?.startsWith('Bearer ') ? authorization.slice(7).trim() : undefined;
    if (!token) {
      throw new KeymeshError({
        code: Code.Unauthenticated,
        reason: Reason.UNAUTHENTICATED,
        message: 'Missing virtual key: send "Authorization: Bearer <your keymesh virtual key>".',
      });
    }
    const tenantId = this.tenantOf(token);
    if (tenantId === undefined) {
      throw new KeymeshError({ code: Code.Unauthenticated, reason: Reason.UNAUTHENTICATED, message: 'Incorrect virtual key provided.' });
    }
    return tenantId;
  }

  // Hashing every request's key costs more than the rest of auth together;
  // known keys are remembered per route table, so a policy change forgets them.
  private knownKeys = new Map<string, string>();
  private knownKeysTable: RouteTable | undefined;

  private tenantOf(token: string): string | undefined {
    const table = this.deps.table();
    if (table !== this.knownKeysTable) {
      this.knownKeys = new Map();
      this.knownKeysTable = table;
    }
    const known = this.knownKeys.get(token);
    if (known !== undefined) return known;
    const tenantId = table.tenantByKeyHash.get(createHash('sha256').update(token).digest('hex'));
    // Only valid keys are remembered, so guessing cannot grow the map; the bound covers a huge tenant list.
    if (tenantId !== undefined && this.knownKeys.size < 10_000) this.knownKeys.set(token, tenantId);
    return tenantId;
  }

  resolveRoute(model: unknown): PolicyRoute {
    if (typeof model !== 'string' || model === '') {
      throw KeymeshError.invalidRequest('you must provide a model parameter', 'model');
    }
    const route = this.deps.table().routes.get(model);
    if (!route) {
      throw new KeymeshError({
        code: Code.NotFound,
        reason: Reason.ROUTE_NOT_FOUND,
        message: `The model \`${model.slice(0, 200)}\` does not exist or you do not have access to it.`,
        metadata: { param: 'model' },
      });
    }
    return route;
  }

  async chat(scope: RequestScope, req: OpenAiChatRequest, rawBody: Buffer | undefined, directive: CacheDirective): Promise<ChatOutcome> {
    const cacheKey = scope.route.cacheTtlMs !== null && directive !== 'bypass' ? cacheKeyOf(scope.tenantId, req) : undefined;
    if (cacheKey !== undefined && directive === 'use') {
      const cached = await this.lookup(scope, cacheKey);
      if (cached) return { result: cached, served: undefined };
    }
    const served = await this.deps.dispatcher.run(scope, chatAttempt(req, rawBody), degradedChatResult(req, scope.requestId));
    // A degraded answer stands in for a moment's outage; cached, it would outlive it.
    if (cacheKey !== undefined && scope.route.cacheTtlMs !== null && served.degraded === undefined) {
      this.store(scope, cacheKey, served.value.bytes, scope.route.cacheTtlMs);
    }
    return { result: served.value, served };
  }

  /** The end of every request on both edges: its usage event, and the settle of its token reservation. */
  recordUsage(scope: RequestScope, startedMs: number, record: UsageRecord): void {
    this.deps.dispatcher.releaseHold(scope);
    this.settle(scope, record.usage);
    const latencyMs = Date.now() - startedMs;
    // A whole message, not an init shape: the batch is then built without a field-by-field copy of each event.
    this.deps.usage.record({
      $typeName: 'keymesh.analytics.v1.UsageEvent',
      requestId: scope.requestId,
      time: timestampFromMs(startedMs),
      tenantId: scope.tenantId,
      route: scope.route.alias,
      model: record.model,
      providerId: record.providerId,
      keyId: record.keyId,
      promptTokens: record.usage?.prompt_tokens ?? 0,
      completionTokens: record.usage?.completion_tokens ?? 0,
      // A cache hit never reached the dispatcher and a degraded answer has no price: both cost 0.
      costMicroUsd: bigintOf(usageCostOf(scope.tokens?.servedPrice ?? null, record.usage)),
      latency: create(DurationSchema, durationOfMs(latencyMs)),
      status: record.status,
      attempts: record.attempts,
      cached: record.cached,
      streamed: record.streamed,
      errorReason: record.errorReason,
      traceParent: '',
    }, scope.traceContext);
  }

  private settle(scope: RequestScope, usage: OpenAiUsage | undefined): void {
    const tokens = scope.tokens;
    if (tokens === undefined) return;
    const { reservation, scopeReservations } = tokens;
    if (reservation === undefined && scopeReservations === undefined) return;
    // Settled once, even if an edge reports the request's end twice.
    tokens.reservation = undefined;
    tokens.scopeReservations = undefined;
    const usedTokens = tokens.usedTokensOf(usage);
    // No usage (a stream cut short, a caller gone): the estimates stand, and nothing needs saying.
    if (usedTokens === undefined) return;
    if (reservation !== undefined && usedTokens !== reservation.reservedTokens) this.deps.settles.settle({ ...reservation, usedTokens });
    // The tenant, route and pool total the request was admitted on are corrected like its key; cost quotas to what it cost.
    for (const scoped of scopeReservations ?? []) {
      const used = scoped.cost === true ? usageCostOf(tokens.servedPrice, usage) : usedTokens;
      if (used !== scoped.reservedTokens) this.deps.settles.settle({ ...scoped, usedTokens: used });
    }
  }

  private async lookup(scope: RequestScope, key: string): Promise<JsonResult<OpenAiChatResponse> | undefined> {
    try {
      const found = await this.deps.cache.lookup({ namespace: scope.tenantId, key }, { deadlineMs: scope.deadlineMs, parent: scope.traceContext });
      if (!found.hit) return undefined;
      // Stored under an earlier, longer ttl: the route's ttl now is what the operator wants served.
      const ttlMs = scope.route.cacheTtlMs;
      const ageMs = msOfDuration(found.age);
      if (ttlMs !== null && ageMs !== undefined && ageMs >= ttlMs) return undefined;
      const bytes = Buffer.from(found.value.buffer, found.value.byteOffset, found.value.byteLength);
      const parsed = JSON.parse(bytes.toString('utf8')) as OpenAiChatResponse;
      return { bytes, parsed, usage: parsed.usage };
    } catch (err) {
      // The cache saves money; it must never cost availability.
      this.deps.logger.warn('cache lookup failed; calling the provider', { error: err as Error });
      return undefined;
    }
  }

  private store(scope: RequestScope, key: string, value: Buffer, ttlMs: number): void {
    this.deps.cache
      .store(
        { namespace: scope.tenantId, key, value, ttl: durationOfMs(ttlMs) },
        { timeoutMs: 2_000, parent: scope.traceContext },
      )
      .catch((err: unknown) => this.deps.logger.warn('cache store failed', { error: err as Error }));
  }
}

/** Unpriced requests (most configs) share one 0n instead of allocating a bigint each. */
function bigintOf(microUsd: number): bigint {
  return microUsd === 0 ? 0n : BigInt(microUsd);
}

// Fields that change the answer; `user`, `stream` and friends do not.
const IGNORED_FOR_CACHE = new Set(['user', 'stream', 'stream_options', 'metadata', 'store']);

/** sha256 of the tenant and the request with sorted keys, so field order does not matter. */
export function cacheKeyOf(tenantId: string, req: OpenAiChatRequest): string {
  return createHash('sha256').update(tenantId).update('\u0000').update(stableStringify(req, true)).digest('hex');
}

function stableStringify(value: unknown, topLevel = false): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => stableStringify(v)).join(',')}]`;
  const entries = Object.keys(value)
    .filter((k) => !(topLevel && IGNORED_FOR_CACHE.has(k)) && (value as Record<string, unknown>)[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stableStringify((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(',')}}`;
}
