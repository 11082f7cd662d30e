import { context, propagation, type Link, type Span, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, SimpleSpanProcessor, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { LeanTracer } from './lean-tracer';

export interface TelemetryOptions {
  /** Spans go here synchronously (tests); otherwise OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set. */
  exporter?: SpanExporter;
}

export interface Telemetry {
  readonly serviceName: string;
  readonly tracer: Tracer;
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

let globalsInstalled = false;
let asyncContextEnabled = false;

// keymesh passes trace context explicitly (a Context argument) rather than
// through AsyncLocalStorage: on Node 20 that runs a hook on every promise,
// which cost the gateway's hot path 15-30% of its throughput.
function installGlobals(): void {
  if (globalsInstalled) return;
  globalsInstalled = true;
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
}

/**
 * Makes context.active() follow async calls (AsyncLocalStorage), for tests
 * and tools that prefer startActiveSpan to passing a Context. Services don't.
 */
export function enableAsyncContext(): void {
  installGlobals();
  if (asyncContextEnabled) return;
  asyncContextEnabled = true;
  const contextManager = new AsyncLocalStorageContextManager();
  contextManager.enable();
  context.setGlobalContextManager(contextManager);
}

function otlpEndpointConfigured(): boolean {
  return Boolean(process.env.OTEL_EXPORTER_OTLP_ENDPOINT || process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/** Where spans go when nothing exports them: they are still made and recorded, as the SDK's are. */
const DISCARD: SpanProcessor = {
  onStart: () => undefined,
  onEnd: () => undefined,
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};

/**
 * Tracing for one keymesh service. Each service gets its own tracer and
 * resource so its spans carry its own service.name even when `keymesh up`
 * runs several services in one process. Spans are always recorded (the
 * default parent-based, always-on sampler); they are exported over OTLP/HTTP
 * when OTEL_EXPORTER_OTLP_ENDPOINT is set. The tracer is keymesh's LeanTracer
 * feeding the SDK's span processors and exporters (see lean-tracer.ts).
 */
export function createTelemetry(serviceName: string, options: TelemetryOptions = {}): Telemetry {
  installGlobals();
  let processor = DISCARD;
  if (options.exporter) processor = new SimpleSpanProcessor(options.exporter);
  else if (otlpEndpointConfigured()) processor = new BatchSpanProcessor(new OTLPTraceExporter());
  const resource = resourceFromAttributes({ 'service.name': serviceName, 'service.namespace': 'keymesh' });
  return {
    serviceName,
    tracer: new LeanTracer(resource, { name: `keymesh.${serviceName}` }, processor),
    flush: () => processor.forceFlush(),
    shutdown: () => processor.shutdown(),
  };
}

/** A link to the span, for work done once on behalf of many requests (batches). */
export function spanLinkOf(span: Span): Link {
  return { context: span.spanContext() };
}

