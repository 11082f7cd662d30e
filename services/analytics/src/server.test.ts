import assert from 'node:assert/strict';
import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { durationFromMs, durationMs, timestampFromMs } from '@bufbuild/protobuf/wkt';
import { createMemoryBus, Subjects, type Bus } from '@keymesh/bus';
import { AnalyticsService, UsageEventBatchSchema, UsageEventSchema } from '@keymesh/proto/analytics/v1/analytics';
import { closeRpcClient, createRpcClient, type RpcClient } from '@keymesh/rpc';
import { attr, createTelemetry, InMemorySpanExporter, type Logger, type Telemetry, enableAsyncContext } from '@keymesh/telemetry';
import { waitFor } from '@keymesh/testing';
import { SpanKind, type SpanContext } from '@opentelemetry/api';
import { startAnalytics, type RunningAnalytics } from './server';

const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

/** A batch of one event, as a router publishes for a quiet turn. */
function usageEvent(init: MessageInitShape<typeof UsageEventSchema>): Uint8Array {
  return toBinary(UsageEventBatchSchema, create(UsageEventBatchSchema, { events: [usageEventInit(init)] }));
}

function usageEventInit(init: MessageInitShape<typeof UsageEventSchema>): MessageInitShape<typeof UsageEventSchema> {
  return { time: timestampFromMs(1_700_000_000_000), status: 200, attempts: 1, latency: durationFromMs(100), ...init };
}

// These tests use startActiveSpan, which needs context to follow async calls.
enableAsyncContext();

describe('analytics over the bus and loopback gRPC', () => {
  let bus: Bus;
  let publisherSpans: InMemorySpanExporter;
  let analyticsSpans: InMemorySpanExporter;
  let publisherTelemetry: Telemetry;
  let analyticsTelemetry: Telemetry;
  let analytics: RunningAnalytics;
  let client: RpcClient<typeof AnalyticsService>;

  beforeEach(async () => {
    bus = createMemoryBus();
    publisherSpans = new InMemorySpanExporter();
    analyticsSpans = new InMemorySpanExporter();
    publisherTelemetry = createTelemetry('router', { exporter: publisherSpans });
    analyticsTelemetry = createTelemetry('analytics', { exporter: analyticsSpans });
    analytics = await startAnalytics({ telemetry: analyticsTelemetry, bus, host: '127.0.0.1', port: 0, logger: quiet });
    client = createRpcClient(AnalyticsService, `127.0.0.1:${analytics.port}`, { telemetry: publisherTelemetry, defaultTimeoutMs: 5_000 });
  });

  afterEach(async () => {
    closeRpcClient(client);
    await analytics.stop();
    await bus.close();
    await Promise.all([publisherTelemetry.shutdown(), analyticsTelemetry.shutdown()]);
  });

  /** Publishes inside a span, as the router does at the end of a request; returns that span's context. */
  function publishInSpan(data: Uint8Array): SpanContext {
    return publisherTelemetry.tracer.startActiveSpan('POST /v1/chat/completions', (span) => {
      bus.publish(Subjects.usageRecorded, data);
      span.end();
      return span.spanContext();
    });
  }

  async function ingested(count: number): Promise<void> {
    await waitFor(() => analytics.ingested() >= count, { timeoutMs: 5_000, what: `${count} usage events ingested` });
  }

  it('answers GetUsage with the totals of the events on the bus, each request counted once', async () => {
    publishInSpan(usageEvent({ requestId: 'r1', tenantId: 'acme', model: 'gpt-4o-mini', keyId: 'k1', promptTokens: 10, completionTokens: 4 }));
    publishInSpan(usageEvent({ requestId: 'r2', tenantId: 'acme', model: 'gpt-4o-mini', keyId: 'k2', status: 429, errorReason: 'KEY_POOL_EXHAUSTED', attempts: 3 }));
    publishInSpan(usageEvent({ requestId: 'r3', tenantId: 'globex', model: 'gpt-4o', keyId: 'k1', promptTokens: 7, cached: true }));
    publishInSpan(usageEvent({ requestId: 'r1', tenantId: 'acme', model: 'gpt-4o-mini', keyId: 'k1', promptTokens: 10, completionTokens: 4 }));
    await ingested(4);

    const all = await client.getUsage({});
    assert.equal(all.totals?.requests, 3n);
    assert.equal(all.totals?.errors, 1n);
    assert.equal(all.totals?.cached, 1n);
    assert.equal(all.totals?.promptTokens, 17n);
    assert.equal(all.totals?.completionTokens, 4n);
    assert.equal(all.totals?.attempts, 5n);
    assert.equal(all.totals?.totalLatency && durationMs(all.totals.totalLatency), 300);
    assert.deepEqual(all.tenants.map((g) => [g.name, g.totals?.requests]), [['acme', 2n], ['globex', 1n]]);
    assert.deepEqual(all.keys.map((g) => [g.name, g.totals?.requests]), [['k1', 2n], ['k2', 1n]]);

    const acme = await client.getUsage({ tenantId: 'acme' });
    assert.equal(acme.totals?.requests, 2n);
    assert.deepEqual(acme.tenants.map((g) => g.name), ['acme']);
    assert.deepEqual(acme.models.map((g) => [g.name, g.totals?.requests]), [['gpt-4o-mini', 2n]]);
    assert.deepEqual(acme.keys.map((g) => [g.name, g.totals?.requests]), [['k1', 1n], ['k2', 1n]]);
  });

  it("parents each consumer span on the publisher's span, in the same trace", async () => {
    const published = publishInSpan(usageEvent({ requestId: 'r1', tenantId: 'acme' }));
    await ingested(1);

    const consumed = analyticsSpans.getFinishedSpans().filter((s) => s.name === 'keymesh.usage.recorded process');
    assert.equal(consumed.length, 1);
    const span = consumed[0]!;
    assert.equal(span.kind, SpanKind.CONSUMER);
    assert.equal(span.spanContext().traceId, published.traceId);
    assert.equal(span.parentSpanContext?.spanId, published.spanId);
    assert.equal(span.attributes[attr.KEYMESH_COMPONENT], 'analytics');
    assert.equal(span.attributes[attr.MESSAGING_DESTINATION_NAME], Subjects.usageRecorded);
    assert.equal(span.attributes[attr.MESSAGING_OPERATION_TYPE], 'process');
    assert.equal(span.attributes[attr.KEYMESH_REQUEST_ID], 'r1');
    assert.equal(span.resource.attributes['service.name'], 'analytics');
  });

  it('skips a message that is not a UsageEvent and keeps consuming', async () => {
    publishInSpan(new Uint8Array([0xff, 0xff, 0xff, 0xff]));
    publishInSpan(usageEvent({ requestId: 'r1', tenantId: 'acme' }));
    await ingested(2);
    assert.equal((await client.getUsage({})).totals?.requests, 1n);
  });
});
