import type { DescMethod, DescService, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import * as grpc from '@grpc/grpc-js';
import { Code, KeymeshError, toStatusDetails } from '@keymesh/errors';
import { HealthCheckResponse_ServingStatus, Health } from '@keymesh/proto/grpc/health/v1/health';
import { attr, createLogger, type Logger, type Telemetry } from '@keymesh/telemetry';
import { context, SpanKind, SpanStatusCode, trace, type Context } from '@opentelemetry/api';
import { definitionOf } from './definition';
import { extractFromMetadata, firstMetadataValue } from './metadata';

/** What a handler knows about its call besides the request. */
export interface CallContext {
  /** Aborted when the caller cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /** Epoch ms; undefined when the caller set none. */
  readonly deadlineMs: number | undefined;
  header(name: string): string | undefined;
  /** Sent with the status at the end of the call (e.g. x-keymesh-attempts). */
  setTrailer(name: string, value: string): void;
  /** The server span's context: the parent for the handler's own spans and calls. */
  readonly traceContext: Context;
}

type UnaryImpl<M extends DescMethod & { methodKind: 'unary' }> = (
  request: MessageShape<M['input']>,
  ctx: CallContext,
) => Promise<MessageInitShape<M['output']>>;
type ServerStreamImpl<M extends DescMethod & { methodKind: 'server_streaming' }> = (
  request: MessageShape<M['input']>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<M['output']>>;

/** The handlers of a service, typed from its descriptor. */
export type ServiceImpl<S extends GenService<GenServiceMethods>> = {
  [K in keyof S['method']]: S['method'][K] extends DescMethod & { methodKind: 'unary' }
    ? UnaryImpl<S['method'][K]>
    : S['method'][K] extends DescMethod & { methodKind: 'server_streaming' }
      ? ServerStreamImpl<S['method'][K]>
      : never;
};

export interface RpcServerOptions {
  telemetry: Telemetry;
  logger?: Logger;
  /** How long shutdown waits for calls in flight before cutting them. */
  shutdownGraceMs?: number;
}

export interface RpcServer {
  add<S extends GenService<GenServiceMethods>>(service: S, impl: ServiceImpl<S>): void;
  /** Binds host:port (0 = any free port) and reports SERVING on the health service. */
  listen(host: string, port: number): Promise<number>;
  /** Health goes NOT_SERVING, in-flight calls get the grace period, then the rest are cut. */
  shutdown(): Promise<void>;
}

export function createRpcServer(options: RpcServerOptions): RpcServer {
  const logger = options.logger ?? createLogger(options.telemetry.serviceName);
  const server = new grpc.Server({
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_permit_without_calls': 1,
  });
  const health = new HealthState();
  const serviceNames: string[] = [];
  server.addService(definitionOf(Health), health.implementation());

  return {
    add(service, impl) {
      const handlers: grpc.UntypedServiceImplementation = {};
      for (const method of (service as unknown as DescService).methods) {
        const fn = (impl as Record<string, unknown>)[method.localName];
        if (typeof fn !== 'function') throw new Error(`${service.typeName}: no handler for ${method.name}`);
        handlers[method.localName] = adapt(method, fn as AnyHandler, options.telemetry, logger);
      }
      server.addService(definitionOf(service as unknown as DescService), handlers);
      serviceNames.push(service.typeName);
    },
    listen(host, port) {
      return new Promise((resolve, reject) => {
        server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, boundPort) => {
          if (err) return reject(err);
          health.set('', HealthCheckResponse_ServingStatus.SERVING);
          for (const name of serviceNames) health.set(name, HealthCheckResponse_ServingStatus.SERVING);
          resolve(boundPort);
        });
      });
    },
    async shutdown() {
      health.setAll(HealthCheckResponse_ServingStatus.NOT_SERVING);
      const graceMs = options.shutdownGraceMs ?? 5_000;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}

type AnyHandler = (request: unknown, ctx: CallContext) => Promise<unknown> | AsyncIterable<unknown>;
type AnyCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

function contextOf(call: AnyCall, trailers: grpc.Metadata, traceContext: Context): { ctx: CallContext; done: () => void } {
  const controller = new AbortController();
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : Number.isFinite(deadline) ? Number(deadline) : undefined;
  let timer: NodeJS.Timeout | undefined;
  if (deadlineMs !== undefined) {
    timer = setTimeout(() => controller.abort(new KeymeshError({ code: Code.DeadlineExceeded, reason: 'DEADLINE_EXCEEDED', message: 'deadline exceeded' })), Math.max(0, deadlineMs - Date.now()));
  }
  const onCancel = (): void => controller.abort(new KeymeshError({ code: Code.Cancelled, reason: 'CANCELLED', message: 'the caller cancelled' }));
  call.once('cancelled', onCancel);
  return {
    ctx: {
      signal: controller.signal,
      deadlineMs,
      header: (name) => firstMetadataValue(call.metadata, name),
      setTrailer: (name, value) => trailers.set(name, value),
      traceContext,
    },
    done: () => {
      if (timer) clearTimeout(timer);
      call.removeListener('cancelled', onCancel);
    },
  };
}

function statusOf(err: KeymeshError, trailers: grpc.Metadata): Partial<grpc.StatusObject> {
  trailers.set('grpc-status-details-bin', Buffer.from(toStatusDetails(err)));
  return { code: err.code as number as grpc.status, details: err.message, metadata: trailers };
}

function adapt(method: DescMethod, handler: AnyHandler, telemetry: Telemetry, logger: Logger): grpc.UntypedHandleCall {
  const spanName = `${method.parent.typeName}/${method.name}`;
  const spanAttributes = {
    [attr.RPC_SYSTEM]: 'grpc',
    [attr.RPC_SERVICE]: method.parent.typeName,
    [attr.RPC_METHOD]: method.name,
  };
  const run = <T>(call: AnyCall, body: (ctx: CallContext, trailers: grpc.Metadata, span: ReturnType<Telemetry['tracer']['startSpan']>) => Promise<T>): Promise<T> => {
    const parent = extractFromMetadata(call.metadata);
    const span = telemetry.tracer.startSpan(spanName, { kind: SpanKind.SERVER, attributes: spanAttributes }, parent);
    const trailers = new grpc.Metadata();
    const traceContext = trace.setSpan(parent, span);
    const { ctx, done } = contextOf(call, trailers, traceContext);
    return context.with(traceContext, () => body(ctx, trailers, span)).finally(() => {
      done();
      span.end();
    });
  };
  const fail = (err: unknown, span: ReturnType<Telemetry['tracer']['startSpan']>): KeymeshError => {
    const normalized = KeymeshError.from(err);
    if (normalized.code === Code.Internal || normalized.code === Code.Unknown) {
      logger.error(`${spanName} failed`, { reason: normalized.reason, cause: normalized.cause });
    }
    span.setAttribute(attr.RPC_GRPC_STATUS_CODE, normalized.code);
    span.setAttribute(attr.KEYMESH_ERROR_REASON, normalized.reason);
    span.setStatus({ code: SpanStatusCode.ERROR, message: normalized.message });
    return normalized;
  };

  if (method.methodKind === 'unary') {
    return ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      void run(call, async (ctx, trailers, span) => {
        try {
          const response = await (handler(call.request, ctx) as Promise<unknown>);
          span.setAttribute(attr.RPC_GRPC_STATUS_CODE, 0);
          callback(null, response, trailers);
        } catch (err) {
          callback(statusOf(fail(err, span), trailers));
        }
      });
    }) as grpc.UntypedHandleCall;
  }
  if (method.methodKind === 'server_streaming') {
    return ((call: grpc.ServerWritableStream<unknown, unknown>) => {
      void run(call, async (ctx, trailers, span) => {
        try {
          for await (const message of handler(call.request, ctx) as AsyncIterable<unknown>) {
            if (ctx.signal.aborted) break;
            // Respect backpressure: a slow reader must not make us buffer the whole stream.
            // A cancelled call never drains, so stop waiting when the call is aborted.
            if (!call.write(message)) await drainedOrAborted(call, ctx.signal);
          }
          span.setAttribute(attr.RPC_GRPC_STATUS_CODE, 0);
          call.end(trailers);
        } catch (err) {
          // grpc-js turns an 'error' event into the call's status; destroy() would
          // skip _final and leave the client waiting for a status until its deadline.
          call.emit('error', Object.assign(new Error(), statusOf(fail(err, span), trailers)));
        }
      });
    }) as grpc.UntypedHandleCall;
  }
  throw new Error(`${spanName}: ${method.methodKind} methods are not supported`);
}

function drainedOrAborted(call: grpc.ServerWritableStream<unknown, unknown>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      call.removeListener('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    call.once('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** grpc.health.v1.Health for every server, so orchestrators can probe it. */
class HealthState {
  private readonly statuses = new Map<string, HealthCheckResponse_ServingStatus>();
  private readonly watchers = new Set<{ service: string; write: (s: HealthCheckResponse_ServingStatus) => void }>();

  set(service: string, status: HealthCheckResponse_ServingStatus): void {
    this.statuses.set(service, status);
    for (const w of this.watchers) if (w.service === service) w.write(status);
  }

  setAll(status: HealthCheckResponse_ServingStatus): void {
    for (const service of [...this.statuses.keys()]) this.set(service, status);
  }

  implementation(): grpc.UntypedServiceImplementation {
    return {
      check: (call: grpc.ServerUnaryCall<{ service: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const status = this.statuses.get(call.request.service);
        if (status === undefined) return callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
        callback(null, { status });
      },
      watch: (call: grpc.ServerWritableStream<{ service: string }, unknown>) => {
        const watcher = {
          service: call.request.service,
          write: (status: HealthCheckResponse_ServingStatus) => call.write({ status }),
        };
        watcher.write(this.statuses.get(watcher.service) ?? HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN);
        this.watchers.add(watcher);
        call.once('cancelled', () => this.watchers.delete(watcher));
      },
    };
  }
}
