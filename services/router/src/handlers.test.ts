import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { create } from '@bufbuild/protobuf';
import type { PolicyRoute } from '@keymesh/config';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import { ChatRequestSchema, ChatStreamRequestSchema } from '@keymesh/proto/router/v1/router';
import type { CallContext } from '@keymesh/rpc';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { routerHandlers, type RouterHandlerDeps } from './handlers';
import type { RequestScope } from './routing/dispatcher';
import { EMPTY_ROUTE_TABLE } from './routing/route-table';

// A full collection on demand: the bug below only shows once the GC has run.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

const ROUTE: PolicyRoute = {
  alias: 'gpt-4o-mini', strategy: 'fallback', targets: [], degraded: null, cacheTtlMs: null, timeoutMs: 200,
  retry: { rounds: 1, backoffMs: 10 }, maxConcurrency: null, defaultMaxTokens: 256, maxWaitMs: 0, limits: null,
};

/** A gateway whose provider never answers: the call ends only when its scope's signal does. */
function hangingDeps(released: string[]): RouterHandlerDeps {
  const gateway = {
    authenticate: () => 'tenant-a',
    resolveRoute: () => ROUTE,
    chat: (scope: RequestScope) =>
      new Promise((_, reject) => scope.signal.addEventListener('abort', () => reject(scope.signal.reason), { once: true })),
    recordUsage: () => undefined,
  };
  const concurrency = { acquire: () => () => void released.push('slot') };
  return { gateway, concurrency } as unknown as RouterHandlerDeps;
}

function callContext(signal: AbortSignal, deadlineMs: number | undefined): CallContext {
  return { signal, deadlineMs, header: () => 'Bearer sk-test', setTrailer: () => undefined, traceContext: ROOT_CONTEXT };
}

describe('RouterService handlers', () => {
  it("end a call with no deadline of its own at the route's timeout, even after a garbage collection", async () => {
    const released: string[] = [];
    const handlers = routerHandlers(hangingDeps(released));
    const startedMs = Date.now();
    const call = handlers.chat(create(ChatRequestSchema, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }), callContext(new AbortController().signal, undefined)) as Promise<unknown>;
    // In a later task: a WeakRef's target lives at least until the task that made it ends.
    await new Promise((resolve) => setTimeout(resolve, 20));
    collectGarbage();
    const outcome = await Promise.race([call.then(() => 'answered', (err: unknown) => err), new Promise((resolve) => setTimeout(resolve, 2_000, 'still running after 2 s'))]);
    assert.ok(outcome instanceof KeymeshError, String(outcome));
    assert.equal(outcome.code, Code.DeadlineExceeded);
    assert.equal(outcome.reason, Reason.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - startedMs >= ROUTE.timeoutMs - 5);
    assert.deepEqual(released, ['slot']);
  });

  it('end a call when its caller cancels, with the reason the caller gave', async () => {
    const released: string[] = [];
    const handlers = routerHandlers(hangingDeps(released));
    const caller = new AbortController();
    const call = handlers.chat(create(ChatRequestSchema, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }), callContext(caller.signal, undefined)) as Promise<unknown>;
    const cancelled = new KeymeshError({ code: Code.Cancelled, reason: Reason.CANCELLED, message: 'the caller cancelled' });
    caller.abort(cancelled);
    await assert.rejects(call, (err: unknown) => err instanceof KeymeshError && err.code === Code.Cancelled);
    assert.deepEqual(released, ['slot']);
  });

  it('end a stream the route timeout cuts with DEADLINE_EXCEEDED, not with OK after the deltas so far', async () => {
    const released: string[] = [];
    const deps = hangingDeps(released);
    const firstDelta = 'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hel"},"finish_reason":null}]}\n\n';
    // A provider that sends one delta and then stalls: only the request's end stops its body, as with undici.
    async function* stalledBody(scope: RequestScope): AsyncGenerator<Buffer> {
      yield Buffer.from(firstDelta);
      await new Promise((_, reject) => scope.signal.addEventListener('abort', () => reject(scope.signal.reason), { once: true }));
    }
    const dispatcher = {
      run: async (scope: RequestScope) => ({ value: { body: stalledBody(scope), abort: () => undefined }, target: { poolId: 'main', providerId: 'mock', model: 'm', weight: null, price: null }, keyId: 'k1', attempts: 1 }),
    };
    const handlers = routerHandlers({ ...deps, dispatcher, table: () => EMPTY_ROUTE_TABLE } as unknown as RouterHandlerDeps);
    const stream = handlers.chatStream(create(ChatStreamRequestSchema, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }), callContext(new AbortController().signal, undefined)) as AsyncIterable<{ contentDelta?: string }>;
    const deltas: string[] = [];
    const ended = await (async () => {
      for await (const message of stream) deltas.push(message.contentDelta ?? '');
      return 'ended with OK';
    })().catch((err: unknown) => err);
    assert.deepEqual(deltas, ['hel']);
    assert.ok(ended instanceof KeymeshError, String(ended));
    assert.equal(ended.code, Code.DeadlineExceeded);
    assert.deepEqual(released, ['slot']);
  });
});
