export { createTelemetry, enableAsyncContext, spanLinkOf } from './tracing';
export type { Telemetry, TelemetryOptions } from './tracing';
export { injectTraceContext, extractTraceContext } from './propagation';
export { baseContext } from './lean-context';
export * as attr from './attributes';
export { createLogger } from './logger';
export type { Logger, LogLevel } from './logger';
export { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
export type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
