import type { DescMethod, DescService, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import * as grpc from '@grpc/grpc-js';
import { Code, KeymeshError, fromStatusDetails } from '@keymesh/errors';
import { attr, type Telemetry } from '@keymesh/telemetry';
import { context, SpanKind, SpanStatusCode, trace, type Context, type Link, type Span } from '@opentelemetry/api';
import { pathOf, deserializerOf, serializerOf } from './definition';
import { injectIntoMetadata } from './metadata';

export interface CallOptions {
  /** Relative deadline; the client's default applies when neither this nor deadlineMs is set. */
  timeoutMs?: number;
  /** Absolute deadline (epoch ms), e.g. carried from the caller's own deadline. */
  deadlineMs?: number;
  signal?: AbortSignal;
  /** Extra metadata, e.g. authorization. */
  headers?: Record<string, string>;
  /** The trace context to call in; the active one (usually none) otherwise. */
  parent?: Context;
  /** For calls made on behalf of several requests (batches): links to their spans. */
  links?: Link[];
  /** Receives the call's trailing metadata (unary calls). */
  onTrailers?: (trailers: grpc.Metadata) => void;
}

type UnaryCall<M extends DescMethod> = (
  request: MessageInitShape<M['input']>,
  options?: CallOptions,
) => Promise<MessageShape<M['output']>>;
type ServerStreamCall<M extends DescMethod> = (
  request: MessageInitShape<M['input']>,
  options?: CallOptions,
) => AsyncIterable<MessageShape<M['output']>>;

/** A typed client whose methods are the service's, by local name. */
export type RpcClient<S extends GenService<GenServiceMethods>> = {
  [K in keyof S['method']]: S['method'][K] extends DescMethod & { methodKind: 'unary' }
    ? UnaryCall<S['method'][K]>
    : S['method'][K] extends DescMethod & { methodKind: 'server_streaming' }
      ? ServerStreamCall<S['method'][K]>
      : never;
};

export interface RpcClientOptions {
  telemetry: Telemetry;
  /** Applied to calls that bring no deadline of their own: no call waits forever. */
  defaultTimeoutMs?: number;
}

const channels = new WeakMap<object, grpc.Client>();

/**
 * One long-lived channel per client; create clients once at startup and reuse
 * them (a new channel per call would pay the HTTP/2 handshake every time).
 */
export function createRpcClient<S extends GenService<GenServiceMethods>>(
  service: S,
  address: string,
  options: RpcClientOptions,
): RpcClient<S> {
  const channel = new grpc.Client(address, grpc.credentials.createInsecure(), {
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_permit_without_calls': 1,
    // Loopback and in-cluster peers restart; don't let a dead backoff delay a call by seconds.
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 2_000,
  });
  const client: Record<string, unknown> = {};
  for (const method of (service as unknown as DescService).methods) {
    client[method.localName] =
      method.methodKind === 'server_streaming'
        ? serverStreamCall(channel, method, options)
        : unaryCall(channel, method, options);
  }
  channels.set(client, channel);
  return client as RpcClient<S>;
}

export function closeRpcClient(client: object): void {
  channels.get(client)?.close();
}

function parentOf(options: CallOptions | undefined): Context {
  return options?.parent ?? context.active();
}

/** The CLIENT span of one call and the context that carries it to the server. */
function clientSpanStarter(method: DescMethod, defaults: RpcClientOptions) {
  const spanName = `${method.parent.typeName}/${method.name}`;
  const attributes = { [attr.RPC_SYSTEM]: 'grpc', [attr.RPC_SERVICE]: method.parent.typeName, [attr.RPC_METHOD]: method.name };
  return (options: CallOptions | undefined): { span: Span; ctx: Context } => {
    const parent = parentOf(options);
    const span = defaults.telemetry.tracer.startSpan(
      spanName,
      { kind: SpanKind.CLIENT, attributes, ...(options?.links ? { links: options.links } : {}) },
      parent,
    );
    return { span, ctx: trace.setSpan(parent, span) };
  };
}

function deadlineOf(options: CallOptions | undefined, defaults: RpcClientOptions): number {
  if (options?.deadlineMs !== undefined) return options.deadlineMs;
  return Date.now() + (options?.timeoutMs ?? defaults.defaultTimeoutMs ?? 10_000);
}

function metadataOf(options: CallOptions | undefined, ctx: ReturnType<typeof context.active>): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (options?.headers) for (const [k, v] of Object.entries(options.headers)) metadata.set(k, v);
  injectIntoMetadata(metadata, ctx);
  return metadata;
}

function errorOf(err: grpc.ServiceError): KeymeshError {
  const details = err.metadata?.get('grpc-status-details-bin')[0];
  return fromStatusDetails(
    err.code as number as Code,
    err.details || err.message,
    details instanceof Buffer ? new Uint8Array(details.buffer, details.byteOffset, details.byteLength) : undefined,
  );
}

function unaryCall(channel: grpc.Client, method: DescMethod, defaults: RpcClientOptions): UnaryCall<DescMethod> {
  const path = pathOf(method);
  const serialize = serializerOf(method.input) as (value: unknown) => Buffer;
  const deserialize = deserializerOf(method.output);
  const startSpan = clientSpanStarter(method, defaults);
  return (request, options) => {
    const { span, ctx } = startSpan(options);
    return new Promise((resolve, reject) => {
      const call = channel.makeUnaryRequest(
        path,
        serialize,
        deserialize,
        request,
        metadataOf(options, ctx),
        { deadline: deadlineOf(options, defaults) },
        (err, response) => {
          options?.signal?.removeEventListener('abort', onAbort);
          if (err) {
            const error = errorOf(err);
            span.setAttribute(attr.RPC_GRPC_STATUS_CODE, error.code);
            span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
            span.end();
            return reject(error);
          }
          span.setAttribute(attr.RPC_GRPC_STATUS_CODE, 0);
          span.end();
          resolve(response as MessageShape<DescMethod['output']>);
        },
      );
      if (options?.onTrailers) call.on('status', (status: grpc.StatusObject) => options.onTrailers?.(status.metadata));
      const onAbort = (): void => call.cancel();
      if (options?.signal) {
        if (options.signal.aborted) call.cancel();
        else options.signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  };
}

function serverStreamCall(channel: grpc.Client, method: DescMethod, defaults: RpcClientOptions): ServerStreamCall<DescMethod> {
  const path = pathOf(method);
  const serialize = serializerOf(method.input) as (value: unknown) => Buffer;
  const deserialize = deserializerOf(method.output);
  const startSpan = clientSpanStarter(method, defaults);
  return (request, options) => ({
    async *[Symbol.asyncIterator]() {
      const { span, ctx } = startSpan(options);
      const call = channel.makeServerStreamRequest(path, serialize, deserialize, request, metadataOf(options, ctx), {
        deadline: deadlineOf(options, defaults),
      });
      const onAbort = (): void => call.cancel();
      options?.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        for await (const message of call) yield message as MessageShape<DescMethod['output']>;
        span.setAttribute(attr.RPC_GRPC_STATUS_CODE, 0);
      } catch (err) {
        const error = typeof (err as grpc.ServiceError).code === 'number' ? errorOf(err as grpc.ServiceError) : KeymeshError.from(err);
        span.setAttribute(attr.RPC_GRPC_STATUS_CODE, error.code);
        span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
        throw error;
      } finally {
        options?.signal?.removeEventListener('abort', onAbort);
        // Leaving the loop early (break) cancels the call rather than leaking it.
        call.cancel();
        span.end();
      }
    },
  });
}
