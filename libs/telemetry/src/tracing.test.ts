import assert from 'node:assert/strict';
import { context, trace } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { extractTraceContext, injectTraceContext } from './propagation';
import { createTelemetry, enableAsyncContext } from './tracing';

// These tests use startActiveSpan, which needs context to follow async calls.
enableAsyncContext();

describe('telemetry', () => {
  it('gives each service in one process its own service.name', async () => {
    const routerSpans = new InMemorySpanExporter();
    const limiterSpans = new InMemorySpanExporter();
    const router = createTelemetry('router', { exporter: routerSpans });
    const limiter = createTelemetry('limiter', { exporter: limiterSpans });

    router.tracer.startSpan('route').end();
    limiter.tracer.startSpan('acquire').end();

    const [routed] = routerSpans.getFinishedSpans();
    const [acquired] = limiterSpans.getFinishedSpans();
    assert.equal(routed.resource.attributes['service.name'], 'router');
    assert.equal(acquired.resource.attributes['service.name'], 'limiter');
    await Promise.all([router.shutdown(), limiter.shutdown()]);
  });

  it('parents a span on the span active in another service, in one process', async () => {
    const routerSpans = new InMemorySpanExporter();
    const limiterSpans = new InMemorySpanExporter();
    const router = createTelemetry('router', { exporter: routerSpans });
    const limiter = createTelemetry('limiter', { exporter: limiterSpans });

    // The await makes the child run in a later tick: only a context manager
    // carries the active span there.
    await router.tracer.startActiveSpan('route', async (outer) => {
      await new Promise((resolve) => setImmediate(resolve));
      limiter.tracer.startSpan('acquire').end();
      outer.end();
    });

    const [outer] = routerSpans.getFinishedSpans();
    const [inner] = limiterSpans.getFinishedSpans();
    assert.equal(inner.parentSpanContext?.spanId, outer.spanContext().spanId);
    assert.equal(inner.spanContext().traceId, outer.spanContext().traceId);
    await Promise.all([router.shutdown(), limiter.shutdown()]);
  });

  it('carries a span context through headers with inject and extract', async () => {
    const telemetry = createTelemetry('publisher', { exporter: new InMemorySpanExporter() });
    const span = telemetry.tracer.startSpan('publish');
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    injectTraceContext(headers, trace.setSpan(context.active(), span));
    span.end();

    assert.match(headers.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const extracted = trace.getSpanContext(extractTraceContext(headers));
    assert.equal(extracted?.traceId, span.spanContext().traceId);
    assert.equal(extracted?.spanId, span.spanContext().spanId);
    assert.equal(extracted?.isRemote, true);
    await telemetry.shutdown();
  });

  it('injects the active span context by default', async () => {
    const telemetry = createTelemetry('publisher', { exporter: new InMemorySpanExporter() });
    const headers: Record<string, string> = {};
    const traceId = telemetry.tracer.startActiveSpan('publish', (span) => {
      injectTraceContext(headers);
      span.end();
      return span.spanContext().traceId;
    });
    assert.equal(trace.getSpanContext(extractTraceContext(headers))?.traceId, traceId);
    await telemetry.shutdown();
  });

  it('extracts no span context from headers without one', () => {
    assert.equal(trace.getSpanContext(extractTraceContext({ 'content-type': 'text/plain' })), undefined);
  });
});
