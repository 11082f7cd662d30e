import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Code, KeymeshError, Reason, openAiErrorBody, toHttpError } from '@keymesh/errors';
import { attr, extractTraceContext, type Logger, type Telemetry } from '@keymesh/telemetry';
import { SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api';
import { RequestTokens } from '../admission/request-tokens';
import { PRIORITY_HEADER, priorityFromHeader } from '../admission/priority';
import type { OpenAiChatRequest, OpenAiEmbeddingRequest, OpenAiUsage } from '../providers/openai/types';
import { chatStreamAttempt, embeddingAttempt } from '../routing/attempts';
import { DEGRADED_ANSWER_REASON, degradedChatStream, usageReasonOf } from '../routing/degraded';
import type { Dispatcher, RequestScope } from '../routing/dispatcher';
import { GuardReason, type ConcurrencyGuard, type ReleaseSlot } from '../guards/concurrency';
import { bodySha256, idempotencyKeyMismatch, MAX_IDEMPOTENCY_KEY_LENGTH, type IdempotencyStore, type StoredResponse } from '../guards/idempotency';
import type { CacheDirective, Gateway, UsageRecord } from '../routing/gateway';
import type { RouteTable } from '../routing/route-table';
import { METRICS_CONTENT_TYPE, type RequestCounter } from '../metrics/metrics';
import { SseDataReader } from './sse';
import { parseTimeoutHeader, TIMEOUT_HEADER } from './timeout';
import { DeadlineCancellation, type CancelSignal } from '../routing/cancellation';

export interface HttpEdgeDeps {
  table: () => RouteTable;
  gateway: Gateway;
  dispatcher: Dispatcher;
  telemetry: Telemetry;
  logger: Logger;
  maxBodyBytes: number;
  /** Bulkheads per route and tenant. */
  concurrency: ConcurrencyGuard;
  /** Answers remembered under `Idempotency-Key`, and for how long. */
  idempotency: IdempotencyStore;
  idempotencyTtlMs: number;
  usageQuery: (tenantId: string, deadlineMs: number) => Promise<unknown>;
  /** Counts every answered request by route and status. */
  requests: RequestCounter;
  /** The `GET /metrics` body, rendered per scrape. */
  metrics: () => string;
  /** How long a client may take to send a whole request, headers and body; REQUEST_RECEIVE_TIMEOUT_MS when not given. */
  requestReceiveTimeoutMs?: number;
}

/**
 * A request's deadline starts once its body is in (the route comes from the
 * body), so until then only this bounds a client that sends its headers and
 * then trickles or stops its body: Node answers it 408 and closes. Node
 * checks every connectionsCheckingInterval (30 s by default), so a slow
 * client is cut between this and 30 s later.
 */
export const REQUEST_RECEIVE_TIMEOUT_MS = 60_000;

export interface HttpEdge {
  listen(host: string, port: number): Promise<number>;
  /** Stops accepting, lets requests in flight finish (up to graceMs), then closes idle connections. */
  close(graceMs?: number): Promise<void>;
}

/** One request at the edge: what its response headers and usage event need. */
interface Exchange {
  readonly requestId: string;
  readonly startedMs: number;
  readonly span: Span;
  /** The edge span's context. */
  readonly ctx: Context;
  /** Covers routing the request, from the route lookup to its last byte. */
  routeSpan: Span | undefined;
  readonly res: ServerResponse;
  scope: RequestScope | undefined;
  usage: UsageRecord | undefined;
  /** The bulkhead slot this request holds, given back once when it finishes or the client leaves. */
  releaseSlot: ReleaseSlot | undefined;
}

/**
 * Response headers as writeHead's flat list: name, value, name, value. Built
 * per response as objects (a spread of optional headers), they kept every
 * response's objects alive past two young-generation collections until the
 * next full one: about 2.6 KB per request promoted to the old generation,
 * against about 0.5 KB with lists.
 */
type HeaderList = string[];

/** Headers of a stored answer that the edge sets itself when replaying it. */
const REPLAY_OWN_HEADERS = new Set(['content-type', 'content-length', 'x-keymesh-request-id']);

/**
 * The OpenAI-compatible HTTP edge. An unmodified OpenAI SDK pointed at it
 * works: same paths, same JSON, same SSE framing, same error shape.
 */
export function createHttpEdge(deps: HttpEdgeDeps): HttpEdge {
  const { tracer } = deps.telemetry;
  const requestTimeout = deps.requestReceiveTimeoutMs ?? REQUEST_RECEIVE_TIMEOUT_MS;
  const server: Server = createServer({
    keepAliveTimeout: 65_000,
    requestTimeout,
    headersTimeout: Math.min(60_000, requestTimeout),
    // Node's default (30 s) unless the timeout is shorter, so a short one is checked in time.
    connectionsCheckingInterval: Math.min(30_000, Math.max(10, Math.floor(requestTimeout / 4))),
  }, (req, res) => {
    const parent = extractTraceContext(req.headers);
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?', 1)[0];
    const span = tracer.startSpan(
      `${method} ${path}`,
      { kind: SpanKind.SERVER, attributes: { [attr.KEYMESH_COMPONENT]: 'edge', [attr.HTTP_REQUEST_METHOD]: method, [attr.HTTP_ROUTE]: path } },
      parent,
    );
    const exchange: Exchange = {
      requestId: randomUUID(),
      startedMs: Date.now(),
      span,
      ctx: trace.setSpan(parent, span),
      routeSpan: undefined,
      res,
      scope: undefined,
      usage: undefined,
      releaseSlot: undefined,
    };
    span.setAttribute(attr.KEYMESH_REQUEST_ID, exchange.requestId);
    handle(req, method, path, exchange)
      .catch((err: unknown) => sendError(exchange, err))
      .finally(() => finish(exchange));
  });

  async function handle(req: IncomingMessage, method: string, path: string, exchange: Exchange): Promise<void> {
    if (path === '/healthz') return sendText(exchange.res, 200, 'ok');
    // Unauthenticated like /healthz, for Prometheus; it carries ids from the config, no secrets.
    if (path === '/metrics' && method === 'GET') return sendText(exchange.res, 200, deps.metrics(), METRICS_CONTENT_TYPE);
    if (path === '/readyz') return deps.table().version > 0n ? sendText(exchange.res, 200, 'ready') : sendText(exchange.res, 503, 'no policy yet');
    const endpoint = ENDPOINTS[path];
    if (!endpoint) {
      req.resume();
      throw new KeymeshError({ code: Code.NotFound, reason: Reason.NOT_FOUND, message: `Unknown request URL: ${method} ${path.slice(0, 200)}.` });
    }
    if (endpoint.method !== method) {
      req.resume();
      exchange.res.setHeader('allow', endpoint.method);
      throw new KeymeshError({ code: Code.Unimplemented, reason: METHOD_NOT_ALLOWED, message: `${path} accepts ${endpoint.method} only.` });
    }
    const tenantId = deps.gateway.authenticate(req.headers.authorization);
    exchange.span.setAttribute(attr.KEYMESH_TENANT_ID, tenantId);
    switch (endpoint.kind) {
      case 'models':
        return sendJson(exchange, 200, deps.table().modelsBody);
      case 'usage': {
        const usage = await deps.usageQuery(tenantId, Date.now() + 5_000);
        return sendJson(exchange, 200, Buffer.from(JSON.stringify(usage)));
      }
      case 'chat':
        return chat(req, exchange, tenantId);
      case 'embeddings':
        return embeddings(req, exchange, tenantId);
    }
  }

  async function chat(req: IncomingMessage, exchange: Exchange, tenantId: string): Promise<void> {
    const raw = await readBody(req, deps.maxBodyBytes);
    const body = parseObject(raw) as OpenAiChatRequest;
    const route = deps.gateway.resolveRoute(body.model);
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      throw KeymeshError.invalidRequest("'messages' must be a non-empty array of messages", 'messages');
    }
    // The rest of a message is the provider's to judge; its shape is read here (token estimates).
    if (!body.messages.every(isObject)) throw KeymeshError.invalidRequest("each of 'messages' must be an object", 'messages');
    // Anything else, taken for "not streamed", would meet a provider that streams it anyway.
    if (body.stream != null && typeof body.stream !== 'boolean') throw KeymeshError.invalidRequest("'stream' must be a boolean", 'stream');
    const scope = scopeFor(req, exchange, tenantId, route);
    scope.tokens?.forChat(body);
    if (body.stream === true) return chatStream(exchange, scope, body, raw);
    const idempotencyKey = req.headers['idempotency-key'];
    if (idempotencyKey !== undefined) return chatOnce(req, exchange, scope, body, raw, idempotencyKey);
    await chatJson(req, exchange, scope, body, raw);
  }

  /** A retried request with the same key gets the first one's answer; one in flight is waited for. */
  async function chatOnce(
    req: IncomingMessage,
    exchange: Exchange,
    scope: RequestScope,
    body: OpenAiChatRequest,
    raw: Buffer,
    header: string | string[],
  ): Promise<void> {
    const key = Array.isArray(header) ? header[0] ?? '' : header;
    if (key === '' || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      throw KeymeshError.invalidRequest(`'Idempotency-Key' must be 1-${MAX_IDEMPOTENCY_KEY_LENGTH} characters`, 'Idempotency-Key');
    }
    const claim = await deps.idempotency.claim(`${scope.tenantId}\u0000${key}`, bodySha256(raw), deps.idempotencyTtlMs, scope.signal);
    if (claim.kind === 'mismatch') throw idempotencyKeyMismatch();
    if (claim.kind === 'replay') {
      const { response } = claim;
      // No provider call and no tokens: counted like a cache hit.
      exchange.usage = {
        model: response.headers['x-keymesh-model'] ?? '',
        providerId: response.headers['x-keymesh-provider'] ?? '',
        keyId: '',
        usage: undefined,
        status: response.status,
        attempts: 0,
        cached: true,
        streamed: false,
        errorReason: '',
      };
      const headers: HeaderList = ['x-keymesh-request-id', exchange.requestId, 'x-keymesh-idempotent-replay', 'true'];
      for (const [name, value] of Object.entries(response.headers)) if (!REPLAY_OWN_HEADERS.has(name)) headers.push(name, value);
      sendJson(exchange, response.status, response.body, headers);
      return;
    }
    let stored: StoredResponse | undefined;
    try {
      const sent = await chatJson(req, exchange, scope, body, raw);
      // A static degraded answer stands in for an outage and cost nothing: a retry deserves a real answer.
      if (exchange.usage?.errorReason !== DEGRADED_ANSWER_REASON) {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        for (let i = 0; i < sent.headers.length; i += 2) if (!REPLAY_OWN_HEADERS.has(sent.headers[i])) headers[sent.headers[i]] = sent.headers[i + 1];
        stored = { status: 200, headers, body: sent.body };
      }
    } finally {
      // On failure nothing is remembered and waiters claim the key afresh.
      claim.complete(stored);
    }
  }

  async function chatJson(
    req: IncomingMessage,
    exchange: Exchange,
    scope: RequestScope,
    body: OpenAiChatRequest,
    raw: Buffer,
  ): Promise<{ headers: HeaderList; body: Buffer }> {
    const { result, served } = await deps.gateway.chat(scope, body, raw, cacheDirectiveOf(req));
    exchange.usage = {
      model: result.parsed.model ?? '',
      providerId: served?.target.providerId ?? '',
      keyId: served?.keyId ?? '',
      usage: result.usage,
      status: 200,
      attempts: served?.attempts ?? 0,
      cached: served === undefined,
      streamed: false,
      errorReason: usageReasonOf(served),
    };
    const headers = servedHeaders(exchange, served, []);
    sendJson(exchange, 200, result.bytes, headers);
    return { headers, body: result.bytes };
  }

  async function chatStream(exchange: Exchange, scope: RequestScope, body: OpenAiChatRequest, raw: Buffer): Promise<void> {
    const served = await deps.dispatcher.run(scope, chatStreamAttempt(body, raw), degradedChatStream(body, scope.requestId));
    const { res } = exchange;
    const adapter = deps.table().providers.get(served.target.providerId)?.adapter;
    exchange.usage = {
      model: served.target.model,
      providerId: served.target.providerId,
      keyId: served.keyId,
      usage: undefined,
      status: 200,
      attempts: served.attempts,
      cached: false,
      streamed: true,
      errorReason: usageReasonOf(served),
    };
    // Headers go out the moment the provider's arrive: time to first byte is the provider's. They
    // leave at the end of this event-loop turn together with the events (and the end) that came
    // in the same read: one write instead of three, each costing as much as a small request.
    res.writeHead(200, servedHeaders(exchange, served, ['content-type', 'text/event-stream; charset=utf-8', 'cache-control', 'no-cache']));
    res.cork();
    res.flushHeaders();
    setImmediate(uncorkUnlessEnded, res);
    const reader = new SseDataReader();
    let usage: OpenAiUsage | undefined;
    try {
      for await (const chunk of served.value.body) {
        if (!res.write(chunk)) await waitForDrain(res, scope.signal);
        if (adapter) for (const data of reader.push(chunk.toString('utf8'))) usage = adapter.streamUsage(data) ?? usage;
      }
    } catch (err) {
      served.value.abort();
      // The provider cut the stream, or the deadline passed: a client still there hears which, in the
      // stream's own shape, rather than a stream that just stops. One that left hears nothing.
      const ended = scope.signal.aborted ? KeymeshError.from(scope.signal.reason) : undefined;
      if (ended?.code === Code.Cancelled) {
        exchange.usage.errorReason = Reason.CANCELLED;
      } else {
        const error = ended ?? new KeymeshError({ code: Code.Unavailable, reason: Reason.PROVIDER_ERROR, message: 'the provider ended the stream early', cause: err });
        exchange.usage.errorReason = error.reason;
        res.write(`data: ${JSON.stringify(openAiErrorBody(error))}\n\n`);
      }
    }
    exchange.usage.usage = usage;
    res.end();
  }

  async function embeddings(req: IncomingMessage, exchange: Exchange, tenantId: string): Promise<void> {
    const raw = await readBody(req, deps.maxBodyBytes);
    const body = parseObject(raw) as OpenAiEmbeddingRequest;
    const route = deps.gateway.resolveRoute(body.model);
    if (body.input === undefined || body.input === null || (Array.isArray(body.input) && body.input.length === 0)) {
      throw KeymeshError.invalidRequest("'input' must be a string or a non-empty array", 'input');
    }
    const scope = scopeFor(req, exchange, tenantId, route);
    scope.tokens?.forEmbeddings(body);
    const served = await deps.dispatcher.run(scope, embeddingAttempt(body, raw));
    const usage = served.value.usage;
    exchange.usage = {
      model: served.value.parsed.model ?? served.target.model,
      providerId: served.target.providerId,
      keyId: served.keyId,
      usage: usage ? { prompt_tokens: usage.prompt_tokens, completion_tokens: 0, total_tokens: usage.total_tokens } : undefined,
      status: 200,
      attempts: served.attempts,
      cached: false,
      streamed: false,
      errorReason: '',
    };
    sendJson(exchange, 200, served.value.bytes, servedHeaders(exchange, served, []));
  }

  function scopeFor(req: IncomingMessage, exchange: Exchange, tenantId: string, route: RequestScope['route']): RequestScope {
    const timeoutMs = parseTimeoutHeader(req.headers[TIMEOUT_HEADER]) ?? route.timeoutMs;
    const priority = priorityFromHeader(req.headers[PRIORITY_HEADER]);
    const cancellation = new DeadlineCancellation(timeoutMs);
    // The caller hanging up cancels the provider call and frees its key and bulkhead slot at once.
    exchange.res.once('close', () => {
      cancellation.end();
      exchange.releaseSlot?.();
      if (!exchange.res.writableFinished) {
        cancellation.abort(new KeymeshError({ code: Code.Cancelled, reason: Reason.CANCELLED, message: 'the client closed the connection' }));
      }
    });
    const routeSpan = tracer.startSpan(
      'keymesh.route',
      { kind: SpanKind.INTERNAL, attributes: { [attr.KEYMESH_COMPONENT]: 'router', [attr.KEYMESH_ROUTE]: route.alias, [attr.KEYMESH_TENANT_ID]: tenantId } },
      exchange.ctx,
    );
    exchange.routeSpan = routeSpan;
    const scope: RequestScope = {
      requestId: exchange.requestId,
      tenantId,
      route,
      deadlineMs: Date.now() + timeoutMs,
      signal: cancellation,
      priority,
      traceContext: trace.setSpan(exchange.ctx, routeSpan),
      tokens: new RequestTokens(),
    };
    exchange.scope = scope;
    // Taken once the scope exists, so a rejection is still a usage event with its reason.
    exchange.releaseSlot = deps.concurrency.acquire(route, tenantId);
    return scope;
  }

  /** Adds to `headers` how the request was served (a cache hit has no `served`), and returns them. */
  function servedHeaders(
    exchange: Exchange,
    served: { target: { providerId: string; model: string }; keyId: string; attempts: number; degraded?: string } | undefined,
    headers: HeaderList,
  ): HeaderList {
    headers.push('x-keymesh-request-id', exchange.requestId);
    if (!served) {
      headers.push('x-keymesh-cache', 'hit');
      return headers;
    }
    headers.push(
      'x-keymesh-provider', served.target.providerId,
      'x-keymesh-model', served.target.model,
      'x-keymesh-key-id', served.keyId,
      'x-keymesh-attempts', String(served.attempts),
    );
    if (exchange.scope?.route.cacheTtlMs != null) headers.push('x-keymesh-cache', 'miss');
    if (served.degraded !== undefined) headers.push('x-keymesh-degraded', 'true');
    return headers;
  }

  function sendError(exchange: Exchange, thrown: unknown): void {
    const err = KeymeshError.from(thrown);
    const http = toHttpError(err);
    const status = err.reason === Reason.PROVIDER_REJECTED && err.upstreamStatus ? err.upstreamStatus : (EDGE_STATUS_BY_REASON[err.reason] ?? http.status);
    // A deadline that passed is the caller's budget running out, not a fault to page anyone about.
    if (status >= 500 && err.code !== Code.Unavailable && err.code !== Code.DeadlineExceeded) deps.logger.error('request failed', { requestId: exchange.requestId, reason: err.reason, cause: err.cause });
    exchange.span.setAttribute(attr.KEYMESH_ERROR_REASON, err.reason);
    exchange.routeSpan?.setStatus({ code: SpanStatusCode.ERROR, message: err.reason });
    if (exchange.scope) {
      exchange.usage = {
        model: '',
        providerId: '',
        keyId: '',
        usage: undefined,
        status,
        attempts: 0,
        cached: false,
        streamed: false,
        errorReason: err.reason,
      };
    }
    const { res } = exchange;
    if (res.headersSent) {
      res.end();
      return;
    }
    if (res.destroyed) return;
    const headers: HeaderList = ['content-type', 'application/json', 'x-keymesh-request-id', exchange.requestId];
    if (http.retryAfterSeconds !== undefined) headers.push('retry-after', String(http.retryAfterSeconds));
    res.writeHead(status, headers);
    res.end(JSON.stringify(openAiErrorBody(err, err.metadata.param ?? null)));
  }

  function finish(exchange: Exchange): void {
    exchange.releaseSlot?.();
    const status = exchange.res.statusCode;
    deps.requests.count(exchange.scope?.route.alias ?? '', status);
    exchange.span.setAttribute(attr.HTTP_RESPONSE_STATUS_CODE, status);
    if (status >= 500) exchange.span.setStatus({ code: SpanStatusCode.ERROR });
    if (exchange.scope && exchange.usage) deps.gateway.recordUsage(exchange.scope, exchange.startedMs, exchange.usage);
    exchange.routeSpan?.end();
    exchange.span.end();
  }

  return {
    listen(host, port) {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve((server.address() as AddressInfo).port);
        });
      });
    },
    close(graceMs = 5_000) {
      return new Promise((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      });
    },
  };
}

type EndpointKind = 'chat' | 'embeddings' | 'models' | 'usage';
const ENDPOINTS: Record<string, { method: string; kind: EndpointKind } | undefined> = {
  '/v1/chat/completions': { method: 'POST', kind: 'chat' },
  '/v1/embeddings': { method: 'POST', kind: 'embeddings' },
  '/v1/models': { method: 'GET', kind: 'models' },
  '/v1/usage': { method: 'GET', kind: 'usage' },
};

/** A known path asked with the wrong method. */
const METHOD_NOT_ALLOWED = 'METHOD_NOT_ALLOWED';

// Reasons the edge answers with a status libs/errors does not know: 422 is what
// Stripe-style APIs answer for a reused idempotency key with another body; 405
// (not a 5xx, which SDKs would retry) for a method the path does not take.
const EDGE_STATUS_BY_REASON: Record<string, number | undefined> = {
  [GuardReason.IDEMPOTENCY_KEY_REUSED]: 422,
  [METHOD_NOT_ALLOWED]: 405,
};

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    req.resume();
    return Promise.reject(tooLarge(maxBytes));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        req.removeAllListeners('data');
        req.resume();
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)));
    // The client left (or was cut for being too slow) before its body was in: its doing, not a fault of ours.
    req.once('error', (err) => reject(new KeymeshError({ code: Code.Cancelled, reason: Reason.CANCELLED, message: 'the client closed the connection before its request body arrived', cause: err })));
  });
}

function tooLarge(maxBytes: number): KeymeshError {
  return new KeymeshError({ code: Code.InvalidArgument, reason: Reason.BODY_TOO_LARGE, message: `The request body is larger than ${maxBytes} bytes.` });
}

function parseObject(raw: Buffer): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw KeymeshError.invalidRequest('We could not parse the JSON body of your request. The body must be a JSON object.');
  }
  if (!isObject(parsed)) {
    throw KeymeshError.invalidRequest('The request body must be a JSON object.');
  }
  return parsed;
}

function cacheDirectiveOf(req: IncomingMessage): CacheDirective {
  const header = req.headers['cache-control'];
  if (!header) return 'use';
  if (header.includes('no-store')) return 'bypass';
  if (header.includes('no-cache')) return 'refresh';
  return 'use';
}

/** The body's type and length join the caller's `headers`, which are not copied. */
function sendJson(exchange: Exchange, status: number, body: Buffer, headers: HeaderList = []): void {
  headers.push('content-type', 'application/json', 'content-length', String(body.length));
  exchange.res.writeHead(status, headers);
  exchange.res.end(body);
}

function sendText(res: ServerResponse, status: number, text: string, contentType = 'text/plain'): void {
  res.writeHead(status, { 'content-type': contentType });
  res.end(text);
}

/** end() uncorks fully; after it the socket may already carry the connection's next response. */
function uncorkUnlessEnded(res: ServerResponse): void {
  if (!res.writableEnded) res.uncork();
}

/** Until the client has taken what was written, left, or the request ended: a response that is gone never drains. */
function waitForDrain(res: ServerResponse, signal: CancelSignal): Promise<void> {
  if (signal.aborted || res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
