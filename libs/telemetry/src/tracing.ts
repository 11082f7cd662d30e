import { context, propagation, type Link, type Span, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';

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

/**
 * Tracing for one keymesh service. Each service gets its own provider so its
 * spans carry its own service.name even when `keymesh up` runs several
 * services in one process. Spans are always recorded (the default
 * parent-based, always-on sampler); they are exported over OTLP/HTTP when
 * OTEL_EXPORTER_OTLP_ENDPOINT is set.
 */
export function createTelemetry(serviceName: string, options: TelemetryOptions = {}): Telemetry {
  installGlobals();
  const spanProcessors: SpanProcessor[] = [];
  if (options.exporter) {
    spanProcessors.push(new SimpleSpanProcessor(options.exporter));
  } else if (otlpEndpointConfigured()) {
    spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter()));
  }
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName, 'service.namespace': 'keymesh' }),
    spanProcessors,
  });
  return {
    serviceName,
    tracer: provider.getTracer(`keymesh.${serviceName}`),
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

/** A link to the span, for work done once on behalf of many requests (batches). */
export function spanLinkOf(span: Span): Link {
  return { context: span.spanContext() };
}

