import { randomFillSync } from 'node:crypto';
import {
  context as apiContext,
  diag,
  INVALID_SPAN_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Attributes,
  type AttributeValue,
  type Context,
  type Exception,
  type HrTime,
  type Link,
  type Span,
  type SpanContext,
  type SpanOptions,
  type SpanStatus,
  type TimeInput,
  type Tracer,
} from '@opentelemetry/api';
import {
  hrTime,
  hrTimeDuration,
  isAttributeValue,
  isTimeInput,
  isTimeInputHrTime,
  isTracingSuppressed,
  millisToHrTime,
  otperformance,
  type InstrumentationScope,
} from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanProcessor, TimedEvent } from '@opentelemetry/sdk-trace-base';

/** The SDK's defaults (OTEL_SPAN_*_COUNT_LIMIT unset). */
const MAX_ATTRIBUTES = 128;
const MAX_EVENTS = 128;
const MAX_LINKS = 128;

const INVALID_TRACE_ID = INVALID_SPAN_CONTEXT.traceId;
const INVALID_SPAN_ID = INVALID_SPAN_CONTEXT.spanId;

/** Random ids from a crypto-filled pool: one fill per 256 trace ids. */
class IdPool {
  private readonly pool = Buffer.allocUnsafe(4096);
  private offset = this.pool.length;

  next(bytes: number, invalid: string): string {
    for (;;) {
      if (this.offset + bytes > this.pool.length) {
        randomFillSync(this.pool);
        this.offset = 0;
      }
      const id = this.pool.toString('hex', this.offset, this.offset + bytes);
      this.offset += bytes;
      if (id !== invalid) return id;
    }
  }
}

const ids = new IdPool();

function toHrTime(input: TimeInput | undefined, startPerfMs: number, start: HrTime | undefined): HrTime {
  if (input === undefined) {
    // Relative to the start on the monotonic clock, as the SDK does, so a duration never goes backwards.
    return start === undefined ? nowHrTime() : addMillis(start, otperformance.now() - startPerfMs);
  }
  if (typeof input === 'number') return input <= otperformance.now() ? hrTime(input) : millisToHrTime(input);
  if (input instanceof Date) return millisToHrTime(input.getTime());
  if (isTimeInputHrTime(input)) return input;
  return nowHrTime();
}

const TIME_ORIGIN: HrTime = millisToHrTime(otperformance.timeOrigin);

/** The SDK's hrTime() (the time origin plus performance.now(), each as an HrTime) as one array instead of three. */
function nowHrTime(): HrTime {
  return addMillis(TIME_ORIGIN, otperformance.now());
}

/** `time` plus `ms`, rounded to the nanosecond as millisToHrTime rounds. */
function addMillis(time: HrTime, ms: number): HrTime {
  let seconds = time[0] + Math.trunc(ms / 1000);
  let nanos = time[1] + Math.round((ms % 1000) * 1e6);
  if (nanos >= 1e9) {
    seconds += 1;
    nanos -= 1e9;
  }
  return [seconds, nanos];
}

/**
 * An event's or link's attributes as the SDK keeps them: valid values only,
 * at most 128, arrays copied so a caller's later change does not show.
 */
function keptAttributes(from: Attributes | undefined): { attributes: Attributes; count: number; dropped: number } {
  const attributes: Attributes = {};
  let count = 0;
  let dropped = 0;
  for (const key in from) {
    if (!Object.prototype.hasOwnProperty.call(from, key)) continue;
    const value = from[key];
    if (value == null || key.length === 0 || !isAttributeValue(value)) continue;
    if (count >= MAX_ATTRIBUTES) {
      dropped++;
      continue;
    }
    count++;
    attributes[key] = Array.isArray(value) ? (value.slice() as AttributeValue) : value;
  }
  return { attributes, count, dropped };
}

// What a span holds until it has its own (see LeanSpan): frozen, so a stray write fails loudly.
const NO_LINKS = Object.freeze([]) as unknown as Link[];
const NO_EVENTS = Object.freeze([]) as unknown as TimedEvent[];
const UNSET_STATUS: SpanStatus = Object.freeze({ code: SpanStatusCode.UNSET });
const NOT_ENDED = Object.freeze([0, 0]) as unknown as HrTime;
const NO_DURATION = Object.freeze([-1, -1]) as unknown as HrTime;

/**
 * A recording span, exported through the SDK's span processors exactly as the
 * SDK's own span is (it is an SDK `ReadableSpan`). Its semantics follow the
 * SDK's SpanImpl with default limits: attributes, events and links capped at
 * 128, status OK final, end once.
 */
export class LeanSpan implements Span, ReadableSpan {
  readonly attributes: Attributes = {};
  // Shared until the span has links or events of its own: most spans never do, and a
  // request makes three. Nothing changes these values in place; they are replaced.
  links: Link[] = NO_LINKS;
  events: TimedEvent[] = NO_EVENTS;
  readonly startTime: HrTime;
  status: SpanStatus = UNSET_STATUS;
  endTime: HrTime = NOT_ENDED;
  duration: HrTime = NO_DURATION;
  ended = false;
  droppedAttributesCount = 0;
  droppedEventsCount = 0;
  droppedLinksCount = 0;
  private readonly startPerfMs: number;
  private attributeCount = 0;

  constructor(
    public name: string,
    readonly kind: SpanKind,
    private readonly context: SpanContext,
    readonly parentSpanContext: SpanContext | undefined,
    readonly resource: Resource,
    readonly instrumentationScope: InstrumentationScope,
    private readonly processor: SpanProcessor,
    options: SpanOptions,
    parent: Context,
  ) {
    this.startPerfMs = otperformance.now();
    this.startTime = toHrTime(options.startTime, this.startPerfMs, undefined);
    if (options.links !== undefined) this.addLinks(options.links);
    if (options.attributes !== undefined) this.setAttributes(options.attributes);
    processor.onStart(this, parent);
  }

  spanContext(): SpanContext {
    return this.context;
  }

  setAttribute(key: string, value?: AttributeValue): this {
    if (value == null || this.ended) return this;
    if (key.length === 0) {
      diag.warn(`Invalid attribute key: ${key}`);
      return this;
    }
    if (!isAttributeValue(value)) {
      diag.warn(`Invalid attribute value set for key: ${key}`);
      return this;
    }
    const isNew = !Object.prototype.hasOwnProperty.call(this.attributes, key);
    if (isNew && this.attributeCount >= MAX_ATTRIBUTES) {
      this.droppedAttributesCount++;
      return this;
    }
    this.attributes[key] = Array.isArray(value) ? (value.slice() as AttributeValue) : value;
    if (isNew) this.attributeCount++;
    return this;
  }

  setAttributes(attributes: Attributes): this {
    for (const key in attributes) {
      if (Object.prototype.hasOwnProperty.call(attributes, key)) this.setAttribute(key, attributes[key]);
    }
    return this;
  }

  addEvent(name: string, attributesOrStartTime?: Attributes | TimeInput, timeStamp?: TimeInput): this {
    if (this.ended) return this;
    let attributes: Attributes | undefined;
    if (isTimeInput(attributesOrStartTime)) {
      if (!isTimeInput(timeStamp)) timeStamp = attributesOrStartTime;
    } else {
      attributes = attributesOrStartTime;
    }
    if (this.events === NO_EVENTS) this.events = [];
    if (this.events.length >= MAX_EVENTS) {
      this.events.shift();
      this.droppedEventsCount++;
    }
    const kept = keptAttributes(attributes);
    this.events.push({ name, attributes: kept.attributes, time: toHrTime(timeStamp, this.startPerfMs, this.startTime), droppedAttributesCount: kept.dropped });
    return this;
  }

  addLink(link: Link): this {
    if (this.ended) return this;
    if (this.links === NO_LINKS) this.links = [];
    if (this.links.length >= MAX_LINKS) {
      this.links.shift();
      this.droppedLinksCount++;
    }
    const kept: Link = { context: link.context };
    if (link.attributes !== undefined) {
      const { attributes, count, dropped } = keptAttributes(link.attributes);
      if (count > 0) kept.attributes = attributes;
      if (dropped > 0) kept.droppedAttributesCount = dropped;
    }
    this.links.push(kept);
    return this;
  }

  addLinks(links: Link[]): this {
    for (const link of links) this.addLink(link);
    return this;
  }

  setStatus(status: SpanStatus): this {
    // As the SDK: UNSET changes nothing and OK is final.
    if (this.ended || status.code === SpanStatusCode.UNSET || this.status.code === SpanStatusCode.OK) return this;
    this.status = status.code === SpanStatusCode.ERROR && typeof status.message === 'string' ? { code: status.code, message: status.message } : { code: status.code };
    return this;
  }

  updateName(name: string): this {
    if (!this.ended) this.name = name;
    return this;
  }

  end(endTime?: TimeInput): void {
    if (this.ended) {
      diag.error(`${this.name} ${this.context.traceId}-${this.context.spanId} - You can only call end() on a span once.`);
      return;
    }
    this.endTime = toHrTime(endTime, this.startPerfMs, this.startTime);
    this.duration = hrTimeDuration(this.startTime, this.endTime);
    if (this.duration[0] < 0) {
      this.endTime = [this.startTime[0], this.startTime[1]];
      this.duration = [0, 0];
    }
    this.processor.onEnding?.(this);
    this.ended = true;
    this.processor.onEnd(this);
  }

  isRecording(): boolean {
    return !this.ended;
  }

  recordException(exception: Exception, time?: TimeInput): void {
    const attributes: Attributes = {};
    if (typeof exception === 'string') {
      attributes['exception.message'] = exception;
    } else if (exception) {
      if (exception.code) attributes['exception.type'] = exception.code.toString();
      else if (exception.name) attributes['exception.type'] = exception.name;
      if (exception.message) attributes['exception.message'] = exception.message;
      if (exception.stack) attributes['exception.stacktrace'] = exception.stack;
    }
    if (attributes['exception.type'] || attributes['exception.message']) this.addEvent('exception', attributes, time);
  }
}

/**
 * A tracer whose spans cost a fraction of the SDK tracer's: on the gateway's
 * hot path (three spans per request) the SDK's startSpan (a sampler object,
 * attribute sanitizing twice, trace-id validation by regular expression, span
 * metrics) took about a tenth of keymesh's CPU. Sampling is the SDK's
 * default, parent-based always-on: a root is sampled, a child follows its
 * parent's sampled flag. Spans go to the same SDK span processors and
 * exporters, so what is exported is unchanged.
 */
export class LeanTracer implements Tracer {
  constructor(
    private readonly resource: Resource,
    private readonly scope: InstrumentationScope,
    private readonly processor: SpanProcessor,
  ) {}

  startSpan(name: string, options: SpanOptions = {}, ctx: Context = apiContext.active()): Span {
    if (isTracingSuppressed(ctx)) return trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
    const parentSpan = options.root ? undefined : trace.getSpan(ctx);
    const parent = parentSpan?.spanContext();
    // Our own spans are valid by construction; anything else is checked as the SDK checks it.
    const validParent = parent !== undefined && (parentSpan instanceof LeanSpan || (parent.traceId !== INVALID_TRACE_ID && parent.spanId !== INVALID_SPAN_ID && trace.isSpanContextValid(parent))) ? parent : undefined;
    const spanId = ids.next(8, INVALID_SPAN_ID);
    if (validParent !== undefined && (validParent.traceFlags & TraceFlags.SAMPLED) === 0) {
      return trace.wrapSpanContext({ traceId: validParent.traceId, spanId, traceFlags: TraceFlags.NONE, traceState: validParent.traceState });
    }
    const spanContext: SpanContext = {
      traceId: validParent?.traceId ?? ids.next(16, INVALID_TRACE_ID),
      spanId,
      traceFlags: TraceFlags.SAMPLED,
      traceState: validParent?.traceState,
    };
    return new LeanSpan(name, options.kind ?? SpanKind.INTERNAL, spanContext, validParent, this.resource, this.scope, this.processor, options, ctx);
  }

  startActiveSpan<F extends (span: Span) => unknown>(name: string, fn: F): ReturnType<F>;
  startActiveSpan<F extends (span: Span) => unknown>(name: string, options: SpanOptions, fn: F): ReturnType<F>;
  startActiveSpan<F extends (span: Span) => unknown>(name: string, options: SpanOptions, ctx: Context, fn: F): ReturnType<F>;
  startActiveSpan<F extends (span: Span) => unknown>(name: string, ...rest: [F] | [SpanOptions, F] | [SpanOptions, Context, F]): ReturnType<F> {
    const fn = rest[rest.length - 1] as F;
    const options = rest.length > 1 ? (rest[0] as SpanOptions) : undefined;
    const parent = rest.length > 2 ? (rest[1] as Context) : apiContext.active();
    const span = this.startSpan(name, options, parent);
    return apiContext.with(trace.setSpan(parent, span), () => fn(span) as ReturnType<F>);
  }
}
