import assert from 'node:assert/strict';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import {
  AcquireOutcome,
  AcquireRequestSchema,
  AcquireResponseSchema,
  LimiterService,
} from '@keymesh/proto/limiter/v1/limiter';
import { RouterService } from '@keymesh/proto/router/v1/router';
import { createTelemetry, type Logger } from '@keymesh/telemetry';
import { closeRpcClient, createRpcClient, type RpcClient } from './client';
import { createRpcServer, type CallContext, type RpcServer, type ServiceImpl } from './server';

const telemetry = createTelemetry('rpc-test');

interface LoggedError {
  message: string;
  fields: Record<string, unknown> | undefined;
}

function quietLogger(errors: LoggedError[] = []): Logger {
  return {
    debug: () => {},
    info: () => {},
    warn: () => {},
    error: (message, fields) => errors.push({ message, fields }),
  };
}

const unimplemented = (): never => {
  throw new KeymeshError({ code: Code.Unimplemented, reason: 'UNIMPLEMENTED', message: 'not in this test' });
};

function limiter(acquire: ServiceImpl<typeof LimiterService>['acquire']): ServiceImpl<typeof LimiterService> {
  return { acquire, acquireBatch: unimplemented, grantLeases: unimplemented, settle: unimplemented, reportOutcome: unimplemented, release: unimplemented, getKeyState: unimplemented };
}

function router(chatStream: ServiceImpl<typeof RouterService>['chatStream']): ServiceImpl<typeof RouterService> {
  return { chat: unimplemented, chatStream, embed: unimplemented, listModels: unimplemented, getBreakerState: unimplemented };
}

/** Resolves once, with the value; for handing a handler's observations to the test. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Bounds a wait so a broken feature fails the test instead of hanging it. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function aborted(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(signal.reason), { once: true }));
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('expected the call to fail');
}

describe('rpc over loopback', () => {
  let server: RpcServer;
  let address: string;
  let loggedErrors: LoggedError[];
  let acquire: ServiceImpl<typeof LimiterService>['acquire'];
  let chatStream: ServiceImpl<typeof RouterService>['chatStream'];
  let limiterClient: RpcClient<typeof LimiterService>;
  let routerClient: RpcClient<typeof RouterService>;

  beforeEach(async () => {
    loggedErrors = [];
    acquire = async () => ({});
    chatStream = async function* () {};
    server = createRpcServer({ telemetry, logger: quietLogger(loggedErrors), shutdownGraceMs: 500 });
    // Delegate so each test sets its own handler on a server built the same way.
    server.add(LimiterService, limiter((request, ctx) => acquire(request, ctx)));
    server.add(RouterService, router((request, ctx) => chatStream(request, ctx)));
    const port = await server.listen('127.0.0.1', 0);
    address = `127.0.0.1:${port}`;
    limiterClient = createRpcClient(LimiterService, address, { telemetry, defaultTimeoutMs: 5_000 });
    routerClient = createRpcClient(RouterService, address, { telemetry, defaultTimeoutMs: 5_000 });
  });

  afterEach(async () => {
    closeRpcClient(limiterClient);
    closeRpcClient(routerClient);
    await server.shutdown();
  });

  it('answers a unary call on /keymesh.limiter.v1.LimiterService/Acquire', async () => {
    acquire = async (request) => ({ outcome: AcquireOutcome.GRANTED, keyId: `key-of-${request.poolId}` });
    const raw = new grpc.Client(address, grpc.credentials.createInsecure());
    try {
      const response = await new Promise<unknown>((resolve, reject) =>
        raw.makeUnaryRequest(
          '/keymesh.limiter.v1.LimiterService/Acquire',
          (value: { poolId: string }) => Buffer.from(toBinary(AcquireRequestSchema, create(AcquireRequestSchema, value))),
          (bytes: Buffer) => fromBinary(AcquireResponseSchema, bytes),
          { poolId: 'openai-main' },
          (err, value) => (err ? reject(err) : resolve(value)),
        ),
      );
      assert.deepEqual(response, create(AcquireResponseSchema, { outcome: AcquireOutcome.GRANTED, keyId: 'key-of-openai-main' }));
    } finally {
      raw.close();
    }
  });

  it('round-trips a unary call through the typed client', async () => {
    acquire = async (request) => ({
      outcome: AcquireOutcome.DENIED,
      reason: 'KEY_POOL_EXHAUSTED',
      keyId: request.excludedKeyIds.join(','),
      retryAfter: { seconds: 2n, nanos: 0 },
    });
    const response = await limiterClient.acquire({ poolId: 'openai-main', excludedKeyIds: ['k1', 'k2'] });
    assert.equal(response.outcome, AcquireOutcome.DENIED);
    assert.equal(response.reason, 'KEY_POOL_EXHAUSTED');
    assert.equal(response.keyId, 'k1,k2');
    assert.equal(response.retryAfter?.seconds, 2n);
  });

  it('streams every message of a server-streaming call, in order', async () => {
    chatStream = async function* (request) {
      yield { id: 'c1', model: request.model, role: 'assistant', contentDelta: 'Hel' };
      yield { id: 'c1', model: request.model, contentDelta: 'lo' };
      yield { id: 'c1', model: request.model, finishReason: 'stop', usage: { promptTokens: 3, completionTokens: 2, totalTokens: 5 } };
    };
    const received = [];
    for await (const message of routerClient.chatStream({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] })) {
      received.push(message);
    }
    assert.deepEqual(
      received.map((m) => [m.model, m.role, m.contentDelta, m.finishReason]),
      [
        ['gpt-4o-mini', 'assistant', 'Hel', ''],
        ['gpt-4o-mini', '', 'lo', ''],
        ['gpt-4o-mini', '', '', 'stop'],
      ],
    );
    assert.equal(received[2].usage?.totalTokens, 5);
  });

  it('delivers a thrown KeymeshError to the client with its code, reason, retryAfterMs and metadata', async () => {
    acquire = async () => {
      throw new KeymeshError({
        code: Code.ResourceExhausted,
        reason: Reason.KEY_POOL_EXHAUSTED,
        message: 'no key of pool "openai-main" is free',
        retryAfterMs: 1500,
        metadata: { poolId: 'openai-main' },
      });
    };
    const err = await rejection(limiterClient.acquire({ poolId: 'openai-main' }));
    assert.ok(err instanceof KeymeshError, `not a KeymeshError: ${String(err)}`);
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal(err.reason, Reason.KEY_POOL_EXHAUSTED);
    assert.equal(err.message, 'no key of pool "openai-main" is free');
    assert.equal(err.retryAfterMs, 1500);
    assert.deepEqual(err.metadata, { poolId: 'openai-main' });
  });

  it('delivers a KeymeshError thrown mid-stream after the messages before it', async () => {
    chatStream = async function* () {
      yield { contentDelta: 'partial' };
      throw new KeymeshError({ code: Code.Unavailable, reason: Reason.PROVIDER_UNAVAILABLE, message: 'provider went away', retryAfterMs: 250 });
    };
    const received: string[] = [];
    const err = await rejection(
      (async () => {
        for await (const message of routerClient.chatStream({ model: 'm' })) received.push(message.contentDelta);
      })(),
    );
    assert.deepEqual(received, ['partial']);
    assert.ok(err instanceof KeymeshError, `not a KeymeshError: ${String(err)}`);
    assert.equal(err.code, Code.Unavailable);
    assert.equal(err.reason, Reason.PROVIDER_UNAVAILABLE);
    assert.equal(err.retryAfterMs, 250);
  });

  it('turns a plain thrown Error into INTERNAL without its message, and logs the cause', async () => {
    acquire = async () => {
      throw new Error('ECONNREFUSED redis://:s3cret@10.0.0.7');
    };
    const err = await rejection(limiterClient.acquire({ poolId: 'p' }));
    assert.ok(err instanceof KeymeshError);
    assert.equal(err.code, Code.Internal);
    assert.equal(err.reason, Reason.INTERNAL);
    assert.ok(!err.message.includes('s3cret'), err.message);
    assert.equal(loggedErrors.length, 1);
    assert.match(String((loggedErrors[0].fields?.cause as Error).message), /s3cret/);
  });

  it('fails a call whose handler never answers with DEADLINE_EXCEEDED at the deadline, and aborts the handler', async () => {
    const handlerSignal = deferred<AbortSignal>();
    acquire = (_request, ctx) => {
      handlerSignal.resolve(ctx.signal);
      return new Promise(() => {});
    };
    const startedMs = Date.now();
    const err = await rejection(limiterClient.acquire({ poolId: 'p' }, { timeoutMs: 300 }));
    const elapsedMs = Date.now() - startedMs;
    assert.ok(err instanceof KeymeshError);
    assert.equal(err.code, Code.DeadlineExceeded);
    assert.equal(err.reason, Reason.DEADLINE_EXCEEDED);
    assert.ok(elapsedMs >= 250 && elapsedMs < 1_500, `failed after ${elapsedMs} ms`);
    const signal = await handlerSignal.promise;
    await within(aborted(signal), 1_000, "the handler's signal aborting");
  });

  it('tells the handler the deadline, the client default when the caller set none', async () => {
    const seen = deferred<number | undefined>();
    acquire = async (_request, ctx) => {
      seen.resolve(ctx.deadlineMs);
      return {};
    };
    const beforeMs = Date.now();
    await limiterClient.acquire({ poolId: 'p' });
    const deadlineMs = await seen.promise;
    assert.ok(deadlineMs !== undefined);
    assert.ok(deadlineMs > beforeMs + 4_000 && deadlineMs <= Date.now() + 5_100, `deadline in ${deadlineMs - beforeMs} ms`);
  });

  it("aborts the handler's signal when the client aborts its call", async () => {
    const handlerCtx = deferred<CallContext>();
    acquire = async (_request, ctx) => {
      handlerCtx.resolve(ctx);
      throw await aborted(ctx.signal);
    };
    const controller = new AbortController();
    const call = limiterClient.acquire({ poolId: 'p' }, { signal: controller.signal });
    const ctx = await handlerCtx.promise;
    assert.equal(ctx.signal.aborted, false);
    controller.abort();
    const err = await rejection(call);
    assert.ok(err instanceof KeymeshError);
    assert.equal(err.code, Code.Cancelled);
    const reason = await within(aborted(ctx.signal), 2_000, "the handler's signal aborting");
    assert.ok(reason instanceof KeymeshError && reason.code === Code.Cancelled, String(reason));
  });

  it('cancels the server stream and closes the handler when the client breaks out of its loop', async () => {
    const handlerSignal = deferred<AbortSignal>();
    const handlerClosed = deferred();
    chatStream = async function* (_request, ctx) {
      handlerSignal.resolve(ctx.signal);
      try {
        // Faster than the client reads: the server ends up waiting on flow control.
        for (let i = 0; ; i++) yield { contentDelta: `${i} ${'x'.repeat(16_384)}` };
      } finally {
        handlerClosed.resolve();
      }
    };
    let read = 0;
    for await (const message of routerClient.chatStream({ model: 'm' })) {
      assert.ok(message.contentDelta.startsWith(`${read} `));
      if (++read === 3) break;
    }
    await within(aborted(await handlerSignal.promise), 2_000, "the handler's signal aborting");
    await within(handlerClosed.promise, 2_000, 'the handler generator closing');
  });

  it('passes call headers to the handler and its trailers to onTrailers', async () => {
    acquire = async (_request, ctx) => {
      ctx.setTrailer('x-keymesh-attempts', '2');
      return { keyId: ctx.header('authorization') ?? 'none' };
    };
    let trailers: grpc.Metadata | undefined;
    const response = await limiterClient.acquire(
      { poolId: 'p' },
      { headers: { authorization: 'Bearer vk-test' }, onTrailers: (metadata) => (trailers = metadata) },
    );
    assert.equal(response.keyId, 'Bearer vk-test');
    assert.deepEqual(trailers?.get('x-keymesh-attempts'), ['2']);
  });

  it('sends trailers with a failure too', async () => {
    acquire = async (_request, ctx) => {
      ctx.setTrailer('x-keymesh-attempts', '3');
      throw new KeymeshError({ code: Code.Unavailable, reason: Reason.PROVIDER_UNAVAILABLE, message: 'down' });
    };
    let trailers: grpc.Metadata | undefined;
    await rejection(limiterClient.acquire({ poolId: 'p' }, { onTrailers: (metadata) => (trailers = metadata) }));
    assert.deepEqual(trailers?.get('x-keymesh-attempts'), ['3']);
  });
});
