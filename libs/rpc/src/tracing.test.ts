import assert from 'node:assert/strict';
import { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { RouterService } from '@keymesh/proto/router/v1/router';
import { createTelemetry, InMemorySpanExporter, spanLinkOf, type Logger, type ReadableSpan, type Telemetry, enableAsyncContext } from '@keymesh/telemetry';
import { SpanKind } from '@opentelemetry/api';
import { closeRpcClient, createRpcClient, type RpcClient } from './client';
import { createRpcServer, type RpcServer } from './server';

const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
const answer = async (): Promise<Record<string, never>> => ({});

function only(spans: ReadableSpan[], kind: SpanKind, name: string): ReadableSpan {
  const matching = spans.filter((s) => s.kind === kind && s.name === name);
  assert.equal(matching.length, 1, `${matching.length} ${SpanKind[kind]} spans named ${name} among ${spans.map((s) => s.name).join(', ')}`);
  return matching[0];
}

// These tests use startActiveSpan, which needs context to follow async calls.
enableAsyncContext();

describe('rpc tracing', () => {
  let clientSpans: InMemorySpanExporter;
  let serverSpans: InMemorySpanExporter;
  let clientTelemetry: Telemetry;
  let serverTelemetry: Telemetry;
  let server: RpcServer;
  let limiter: RpcClient<typeof LimiterService>;
  let router: RpcClient<typeof RouterService>;

  beforeEach(async () => {
    clientSpans = new InMemorySpanExporter();
    serverSpans = new InMemorySpanExporter();
    clientTelemetry = createTelemetry('router', { exporter: clientSpans });
    serverTelemetry = createTelemetry('limiter', { exporter: serverSpans });
    server = createRpcServer({ telemetry: serverTelemetry, logger: quiet });
    server.add(LimiterService, { acquire: async () => ({ keyId: 'k1' }), acquireBatch: answer, grantLeases: answer, settle: answer, reportOutcome: answer, release: answer, getKeyState: answer });
    server.add(RouterService, {
      chat: answer,
      chatStream: async function* () {
        yield { contentDelta: 'a' };
      },
      embed: answer,
      listModels: answer,
      getBreakerState: answer,
    });
    const address = `127.0.0.1:${await server.listen('127.0.0.1', 0)}`;
    limiter = createRpcClient(LimiterService, address, { telemetry: clientTelemetry });
    router = createRpcClient(RouterService, address, { telemetry: clientTelemetry });
  });

  afterEach(async () => {
    closeRpcClient(limiter);
    closeRpcClient(router);
    await server.shutdown();
    await Promise.all([clientTelemetry.shutdown(), serverTelemetry.shutdown()]);
  });

  it("makes the client span the server span's parent, in one trace", async () => {
    await limiter.acquire({ poolId: 'p' });
    const client = only(clientSpans.getFinishedSpans(), SpanKind.CLIENT, 'keymesh.limiter.v1.LimiterService/Acquire');
    const served = only(serverSpans.getFinishedSpans(), SpanKind.SERVER, 'keymesh.limiter.v1.LimiterService/Acquire');
    assert.equal(served.spanContext().traceId, client.spanContext().traceId);
    assert.equal(served.parentSpanContext?.spanId, client.spanContext().spanId);
    assert.equal(served.resource.attributes['service.name'], 'limiter');
    assert.equal(client.resource.attributes['service.name'], 'router');
    assert.equal(served.attributes['rpc.grpc.status_code'], 0);
  });

  it('parents the client span on the span active around the call', async () => {
    const outerIds = await clientTelemetry.tracer.startActiveSpan('handle request', async (outer) => {
      await limiter.acquire({ poolId: 'p' });
      outer.end();
      return outer.spanContext();
    });
    const client = only(clientSpans.getFinishedSpans(), SpanKind.CLIENT, 'keymesh.limiter.v1.LimiterService/Acquire');
    const served = only(serverSpans.getFinishedSpans(), SpanKind.SERVER, 'keymesh.limiter.v1.LimiterService/Acquire');
    assert.equal(client.parentSpanContext?.spanId, outerIds.spanId);
    assert.equal(client.spanContext().traceId, outerIds.traceId);
    assert.equal(served.spanContext().traceId, outerIds.traceId);
  });

  it('carries the trace through a server-streaming call', async () => {
    for await (const message of router.chatStream({ model: 'm' })) assert.equal(message.contentDelta, 'a');
    const client = only(clientSpans.getFinishedSpans(), SpanKind.CLIENT, 'keymesh.router.v1.RouterService/ChatStream');
    const served = only(serverSpans.getFinishedSpans(), SpanKind.SERVER, 'keymesh.router.v1.RouterService/ChatStream');
    assert.equal(served.parentSpanContext?.spanId, client.spanContext().spanId);
  });

  it('records links to the requests a call is made for, on unary and streaming calls', async () => {
    const first = clientTelemetry.tracer.startSpan('request 1');
    const second = clientTelemetry.tracer.startSpan('request 2');
    const links = [spanLinkOf(first), spanLinkOf(second)];
    await limiter.acquire({ poolId: 'p' }, { links });
    for await (const message of router.chatStream({ model: 'm' }, { links })) assert.ok(message);
    first.end();
    second.end();
    const spans = clientSpans.getFinishedSpans();
    for (const name of ['keymesh.limiter.v1.LimiterService/Acquire', 'keymesh.router.v1.RouterService/ChatStream']) {
      const client = only(spans, SpanKind.CLIENT, name);
      assert.deepEqual(
        client.links.map((l) => l.context.spanId),
        [first.spanContext().spanId, second.spanContext().spanId],
        name,
      );
    }
  });
});
