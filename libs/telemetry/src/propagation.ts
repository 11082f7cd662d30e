import { context, propagation, type Context } from '@opentelemetry/api';

/** Writes the W3C traceparent/tracestate of `ctx` into a plain header carrier. */
export function injectTraceContext(carrier: Record<string, string>, ctx?: Context): void {
  propagation.inject(ctx ?? context.active(), carrier);
}

/** Reads a W3C trace context from headers; the root context when there is none. */
export function extractTraceContext(carrier: Record<string, string | string[] | undefined>): Context {
  return propagation.extract(context.active(), carrier, {
    get: (c, key) => c[key],
    keys: (c) => Object.keys(c),
  });
}
