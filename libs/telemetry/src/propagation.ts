import { context, propagation, type Context, type TextMapGetter } from '@opentelemetry/api';
import { baseContext } from './lean-context';

type HeaderCarrier = Record<string, string | string[] | undefined>;

const HEADER_GETTER: TextMapGetter<HeaderCarrier> = {
  get: (carrier, key) => carrier[key],
  keys: (carrier) => Object.keys(carrier),
};

/** Writes the W3C traceparent/tracestate of `ctx` into a plain header carrier. */
export function injectTraceContext(carrier: Record<string, string>, ctx?: Context): void {
  propagation.inject(ctx ?? context.active(), carrier);
}

/** Reads a W3C trace context from headers; the root context when there is none. */
export function extractTraceContext(carrier: HeaderCarrier): Context {
  return propagation.extract(baseContext(), carrier, HEADER_GETTER);
}
