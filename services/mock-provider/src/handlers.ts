import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KeyRing, KeyState } from './keys';
import { completionBody, planChat, streamFrames, type ChatPlan } from './openai/chat';
import { embeddingsBody, planEmbeddings } from './openai/embeddings';
import {
  BAD_JSON_BODY,
  BODY_TOO_LARGE_BODY,
  INSUFFICIENT_QUOTA_BODY,
  INTERNAL_ERROR_BODY,
  INVALID_API_KEY_BODY,
  SERVER_ERROR_BODY,
  badRequestBody,
  isBadRequest,
  methodNotAllowedBody,
  modelNotFoundBody,
  notFoundBody,
  rateLimitBody,
} from './openai/errors';
import { MODELS_BODY, MODEL_BODIES } from './openai/models';
import type { MockFailures } from './types';

/** What the handlers read on every request; the provider's setters change it in place. */
export interface ProviderState {
  readonly keys: KeyRing;
  readonly now: () => number;
  latencyMs: number;
  failures: MockFailures;
  readonly streamChunks: number;
  readonly streamChunkDelayMs: number;
  /** Numbers completion ids, `chatcmpl-mock-<n>`. */
  lastId: number;
}

const MAX_BODY_BYTES = 8 * 1024 * 1024;
const JSON_TYPE = 'application/json';
const MODELS_PREFIX = '/v1/models/';

type Headers = Record<string, string>;

class BodyTooLargeError extends Error {}

export function createRequestHandler(state: ProviderState): (req: IncomingMessage, res: ServerResponse) => void {
  return function handleRequest(req, res) {
    const url = req.url ?? '/';
    const query = url.indexOf('?');
    const path = query === -1 ? url : url.slice(0, query);
    const method = req.method ?? 'GET';
    switch (path) {
      case '/v1/chat/completions':
        if (method !== 'POST') return sendMethodNotAllowed(res, method, path, 'POST');
        return answerInference(state, req, res, 'chat');
      case '/v1/embeddings':
        if (method !== 'POST') return sendMethodNotAllowed(res, method, path, 'POST');
        return answerInference(state, req, res, 'embeddings');
      case '/v1/models':
        if (method !== 'GET') return sendMethodNotAllowed(res, method, path, 'GET');
        return handleModels(state, req, res, undefined);
      case '/healthz':
        if (method !== 'GET') return sendMethodNotAllowed(res, method, path, 'GET');
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
        return void res.end('ok');
      default:
        if (path.startsWith(MODELS_PREFIX) && path.length > MODELS_PREFIX.length) {
          if (method !== 'GET') return sendMethodNotAllowed(res, method, path, 'GET');
          return handleModels(state, req, res, path.slice(MODELS_PREFIX.length));
        }
        return sendJson(res, 404, notFoundBody(method, path), {});
    }
  };
}

/** The key a request is made with, or undefined after answering 401. */
function authenticate(state: ProviderState, req: IncomingMessage, res: ServerResponse): KeyState | undefined {
  const key = state.keys.fromAuthorization(req.headers.authorization);
  if (key !== undefined && !key.revoked) return key;
  state.keys.count(key, 'unauthorized');
  sendJson(res, 401, INVALID_API_KEY_BODY, {});
  return undefined;
}

/** Listing models is not charged to limits or quota, as at OpenAI. */
function handleModels(state: ProviderState, req: IncomingMessage, res: ServerResponse, modelId: string | undefined): void {
  const key = authenticate(state, req, res);
  if (key === undefined) return;
  if (modelId === undefined) {
    state.keys.count(key, 'ok');
    return sendJson(res, 200, MODELS_BODY, {});
  }
  const body = MODEL_BODIES.get(modelId);
  state.keys.count(key, body === undefined ? undefined : 'ok');
  sendJson(res, body === undefined ? 404 : 200, body ?? modelNotFoundBody(modelId), {});
}

function answerInference(state: ProviderState, req: IncomingMessage, res: ServerResponse, kind: 'chat' | 'embeddings'): void {
  handleInference(state, req, res, kind).catch(() => {
    // A bug here must cost one request, not the process (an unhandled rejection would end it).
    if (res.headersSent) res.destroy();
    else sendJson(res, 500, INTERNAL_ERROR_BODY, {});
  });
}

/**
 * Chat and embeddings: auth, parse, quota, limits, injected failures, answer.
 * Only admitted requests wait `latencyMs`; refusals answer at once, as a real
 * provider's edge does.
 */
async function handleInference(state: ProviderState, req: IncomingMessage, res: ServerResponse, kind: 'chat' | 'embeddings'): Promise<void> {
  const key = authenticate(state, req, res);
  if (key === undefined) return;
  const { keys } = state;

  let raw: Buffer;
  try {
    raw = await readBody(req);
  } catch (error) {
    if (!(error instanceof BodyTooLargeError)) return; // the client went away
    keys.count(key, undefined);
    return sendJson(res, 413, BODY_TOO_LARGE_BODY, {});
  }
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    keys.count(key, undefined);
    return sendJson(res, 400, BAD_JSON_BODY, {});
  }

  const plan = kind === 'chat' ? planChat(json) : planEmbeddings(json);
  if (isBadRequest(plan)) {
    keys.count(key, undefined);
    return sendJson(res, 400, badRequestBody(plan), {});
  }

  const nowMs = state.now();
  if (key.quotaExhausted) {
    keys.count(key, 'quotaExceeded');
    return sendJson(res, 429, INSUFFICIENT_QUOTA_BODY, key.limits === undefined ? {} : key.limits.peek(nowMs));
  }
  let headers: Headers = {};
  if (key.limits !== undefined) {
    const admission = key.limits.admit(nowMs, plan.tokenCost);
    headers = admission.admitted && key.silentLimits ? {} : admission.headers;
    if (!admission.admitted) {
      keys.count(key, 'rateLimited');
      const { retryAfterMs } = admission.rejection;
      headers['retry-after'] = String(Math.max(1, Math.ceil(retryAfterMs / 1000)));
      headers['retry-after-ms'] = String(Math.max(1, Math.ceil(retryAfterMs)));
      return sendJson(res, 429, rateLimitBody(admission.rejection, plan.model), headers);
    }
  }
  key.quotaUsed += 1;

  // Failures strike after admission, so like a real overloaded upstream they still cost capacity and quota.
  const { failures } = state;
  if (failures.errorRate !== undefined && failures.errorRate > 0 && Math.random() < failures.errorRate) {
    keys.count(key, 'failed');
    return afterLatency(state, res, () => sendJson(res, 503, SERVER_ERROR_BODY, headers));
  }
  if (failures.hangRate !== undefined && failures.hangRate > 0 && Math.random() < failures.hangRate) {
    // Never answered: the socket stays open until the client gives up or close() destroys it.
    keys.count(key, 'failed');
    return;
  }

  const createdSeconds = Math.floor(nowMs / 1000);
  if (plan.kind === 'embeddings') {
    keys.count(key, 'ok');
    return afterLatency(state, res, () => sendJson(res, 200, embeddingsBody(plan), headers));
  }
  const id = `chatcmpl-mock-${++state.lastId}`;
  if (plan.stream) return answerStream(state, res, key, plan, id, createdSeconds, headers);
  keys.count(key, 'ok');
  afterLatency(state, res, () => sendJson(res, 200, completionBody(plan, id, createdSeconds), headers));
}

function answerStream(
  state: ProviderState,
  res: ServerResponse,
  key: KeyState,
  plan: ChatPlan,
  id: string,
  createdSeconds: number,
  headers: Headers,
): void {
  const frames = streamFrames(plan, id, createdSeconds, state.streamChunks);
  const cutAfter = state.failures.cutStreamAfterChunks;
  const cut = cutAfter !== undefined && cutAfter < state.streamChunks;
  // The role frame plus `cutAfter` content frames, then the socket dies without [DONE].
  const frameCount = cut ? 1 + cutAfter : frames.length;
  const delayMs = state.streamChunkDelayMs;
  state.keys.count(key, cut ? 'failed' : 'ok');

  afterLatency(state, res, () => {
    headers['content-type'] = 'text/event-stream';
    headers['cache-control'] = 'no-cache';
    res.writeHead(200, headers);
    const finish = (last: string): void => {
      if (cut) res.write(last, () => res.socket?.destroy());
      else res.end(last);
    };
    // Headers, every event and the end in one write, as a fast provider's arrive together.
    if (delayMs === 0) return finish(frames.slice(0, frameCount).join(''));
    res.flushHeaders();

    let next = 0;
    let timer: NodeJS.Timeout | undefined;
    const step = (): void => {
      if (next === frameCount - 1) return finish(frames[next]);
      res.write(frames[next]);
      next += 1;
      timer = setTimeout(step, delayMs);
    };
    res.once('close', () => clearTimeout(timer));
    step();
  });
}

function afterLatency(state: ProviderState, res: ServerResponse, answer: () => void): void {
  const { latencyMs } = state;
  if (latencyMs <= 0) return answer();
  const timer = setTimeout(answer, latencyMs);
  // A client that gives up, or close(), must not leave the timer holding the process.
  res.once('close', () => clearTimeout(timer));
}

function sendJson(res: ServerResponse, status: number, body: string, headers: Headers): void {
  headers['content-type'] = JSON_TYPE;
  headers['content-length'] = String(Buffer.byteLength(body));
  res.writeHead(status, headers);
  res.end(body);
}

function sendMethodNotAllowed(res: ServerResponse, method: string, path: string, allowed: string): void {
  sendJson(res, 405, methodNotAllowedBody(method, path), { allow: allowed });
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    let ended = false;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.once('end', () => {
      ended = true;
      if (bytes > MAX_BODY_BYTES) reject(new BodyTooLargeError());
      else resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, bytes));
    });
    req.once('error', reject);
    // An aborted upload ends in 'close' without 'end'. 'close' also follows every
    // normal 'end', so the check keeps the hot path from building an Error per request.
    req.once('close', () => {
      if (!ended) reject(new Error('request closed before its body ended'));
    });
  });
}
