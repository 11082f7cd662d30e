import assert from 'node:assert/strict';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Span, type Tracer } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { LeanSpan, LeanTracer } from './lean-tracer';

const resource = resourceFromAttributes({ 'service.name': 'test' });

function leanTracer(): { tracer: Tracer; exporter: InMemorySpanExporter } {
  const exporter = new InMemorySpanExporter();
  return { tracer: new LeanTracer(resource, { name: 'keymesh.test' }, new SimpleSpanProcessor(exporter)), exporter };
}

function sdkTracer(): { tracer: Tracer; exporter: InMemorySpanExporter } {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ resource, spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { tracer: provider.getTracer('keymesh.test'), exporter };
}

/** What an exporter sees of a span, without its random ids and clock readings. */
function exported(span: ReadableSpan, all: readonly ReadableSpan[]) {
  const parent = all.find((s) => s.spanContext().spanId === span.parentSpanContext?.spanId);
  return {
    name: span.name,
    kind: span.kind,
    parent: parent?.name,
    sampled: span.spanContext().traceFlags,
    attributes: span.attributes,
    status: span.status,
    events: span.events.map((e) => ({ name: e.name, attributes: e.attributes, droppedAttributesCount: e.droppedAttributesCount })),
    links: span.links.map((l) => ({ attributes: l.attributes, droppedAttributesCount: l.droppedAttributesCount })),
    dropped: [span.droppedAttributesCount, span.droppedEventsCount, span.droppedLinksCount],
    ended: span.ended,
    scope: span.instrumentationScope.name,
    service: span.resource.attributes['service.name'],
  };
}

/** The same calls a request makes, and the edge cases around them. */
function exercise(tracer: Tracer, failure: Error): void {
  const edge = tracer.startSpan('POST /v1/chat/completions', { kind: SpanKind.SERVER, attributes: { 'keymesh.component': 'edge', list: ['a', 'b'], bad: { no: 1 } as never, empty: undefined } }, ROOT_CONTEXT);
  const edgeCtx = trace.setSpan(ROOT_CONTEXT, edge);
  edge.setAttribute('keymesh.request_id', 'r1');
  edge.setAttribute('', 'no key');
  edge.setAttributes({ count: 3, flag: true });
  const route = tracer.startSpan('keymesh.route', { attributes: { 'keymesh.component': 'router' }, links: [{ context: edge.spanContext(), attributes: { why: 'batch' } }] }, edgeCtx);
  const provider = tracer.startSpan('chat gpt-4o-mini', { kind: SpanKind.CLIENT }, trace.setSpan(edgeCtx, route));
  provider.addEvent('retry', { attempt: 2 });
  provider.recordException(failure);
  provider.setStatus({ code: SpanStatusCode.ERROR, message: 'failed' });
  provider.end();
  provider.setAttribute('after.end', 1);
  route.setStatus({ code: SpanStatusCode.OK });
  route.setStatus({ code: SpanStatusCode.ERROR, message: 'too late' });
  route.updateName('keymesh.route gpt-4o-mini');
  route.end();
  for (let i = 0; i < 130; i++) edge.setAttribute(`extra.${i}`, i);
  edge.end();
}

describe('LeanTracer', () => {
  it('exports what the SDK tracer exports for the same calls', () => {
    const lean = leanTracer();
    const sdk = sdkTracer();
    const failure = new Error('boom');
    exercise(lean.tracer, failure);
    exercise(sdk.tracer, failure);
    const leanSpans = lean.exporter.getFinishedSpans();
    const sdkSpans = sdk.exporter.getFinishedSpans();
    assert.equal(leanSpans.length, 3);
    assert.deepEqual(
      leanSpans.map((s) => exported(s, leanSpans)),
      sdkSpans.map((s) => exported(s, sdkSpans)),
    );
    // One trace, parented edge → route → provider.
    assert.equal(new Set(leanSpans.map((s) => s.spanContext().traceId)).size, 1);
    assert.match(leanSpans[0].spanContext().traceId, /^[0-9a-f]{32}$/);
    assert.match(leanSpans[0].spanContext().spanId, /^[0-9a-f]{16}$/);
  });

  it('times spans on a monotonic clock: end after start, duration their difference', async () => {
    const { tracer, exporter } = leanTracer();
    const span = tracer.startSpan('waits');
    await new Promise((resolve) => setTimeout(resolve, 20));
    span.end();
    const [done] = exporter.getFinishedSpans();
    const ms = (t: readonly [number, number]) => t[0] * 1e3 + t[1] / 1e6;
    assert.ok(ms(done.duration) >= 15 && ms(done.duration) < 1_000, `duration ${ms(done.duration)} ms`);
    assert.ok(Math.abs(ms(done.endTime) - ms(done.startTime) - ms(done.duration)) < 0.01);
    assert.ok(Math.abs(ms(done.startTime) - Date.now()) < 2_000, 'start time is wall-clock time');
  });

  it('takes explicit start and end times, and never a negative duration', () => {
    const { tracer, exporter } = leanTracer();
    const startMs = Date.now() + 10_000;
    const backwards = tracer.startSpan('backwards', { startTime: new Date(startMs) });
    backwards.end(startMs - 5_000);
    const [done] = exporter.getFinishedSpans();
    assert.deepEqual(done.duration, [0, 0]);
    assert.deepEqual(done.endTime, done.startTime);
  });

  it('ends a span once', () => {
    const { tracer, exporter } = leanTracer();
    const span = tracer.startSpan('once');
    span.end();
    span.end();
    assert.equal(exporter.getFinishedSpans().length, 1);
    assert.equal(span.isRecording(), false);
  });

  it('follows a remote parent that is not sampled: no recording, same trace', () => {
    const { tracer, exporter } = leanTracer();
    const parent = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.NONE, isRemote: true };
    const span = tracer.startSpan('child', {}, trace.setSpanContext(ROOT_CONTEXT, parent));
    span.end();
    assert.equal(span instanceof LeanSpan, false);
    assert.equal(span.isRecording(), false);
    assert.equal(span.spanContext().traceId, parent.traceId);
    assert.notEqual(span.spanContext().spanId, parent.spanId);
    assert.equal(exporter.getFinishedSpans().length, 0);

    const sampled = tracer.startSpan('child', {}, trace.setSpanContext(ROOT_CONTEXT, { ...parent, traceFlags: TraceFlags.SAMPLED }));
    sampled.end();
    const [done] = exporter.getFinishedSpans();
    assert.equal(done.spanContext().traceId, parent.traceId);
    assert.equal(done.parentSpanContext?.spanId, parent.spanId);
  });

  it('starts a new trace under an invalid parent, and under root: true', () => {
    const { tracer } = leanTracer();
    const invalid = tracer.startSpan('x', {}, trace.setSpanContext(ROOT_CONTEXT, { traceId: 'not-hex', spanId: 'nope', traceFlags: TraceFlags.SAMPLED }));
    assert.ok(invalid instanceof LeanSpan);
    assert.equal((invalid as LeanSpan).parentSpanContext, undefined);
    assert.match(invalid.spanContext().traceId, /^[0-9a-f]{32}$/);

    const parent: Span = tracer.startSpan('parent');
    const root = tracer.startSpan('root', { root: true }, trace.setSpan(ROOT_CONTEXT, parent));
    assert.notEqual(root.spanContext().traceId, parent.spanContext().traceId);
  });

  it('records nothing where tracing is suppressed', () => {
    const { tracer, exporter } = leanTracer();
    tracer.startSpan('quiet', {}, suppressTracing(ROOT_CONTEXT)).end();
    assert.equal(exporter.getFinishedSpans().length, 0);
  });

  it('caps events and links at 128, dropping the oldest, as the SDK does', () => {
    const { tracer, exporter } = leanTracer();
    const span = tracer.startSpan('busy');
    const other = tracer.startSpan('other');
    for (let i = 0; i < 130; i++) {
      span.addEvent(`e${i}`);
      span.addLink({ context: other.spanContext() });
    }
    span.end();
    const [done] = exporter.getFinishedSpans();
    assert.equal(done.events.length, 128);
    assert.equal(done.events[0].name, 'e2');
    assert.equal(done.links.length, 128);
    assert.equal(done.droppedEventsCount, 2);
    assert.equal(done.droppedLinksCount, 2);
  });

  it('keeps a copy of array attributes', () => {
    const { tracer, exporter } = leanTracer();
    const values = ['a'];
    const span = tracer.startSpan('arrays', { attributes: { first: values } });
    span.setAttribute('second', values);
    values.push('b');
    span.end();
    const [done] = exporter.getFinishedSpans();
    assert.deepEqual(done.attributes, { first: ['a'], second: ['a'] });
  });

  it('runs startActiveSpan with the span active in the given context', () => {
    const { tracer, exporter } = leanTracer();
    const result = tracer.startActiveSpan('active', { kind: SpanKind.CONSUMER }, ROOT_CONTEXT, (span) => {
      span.end();
      return 42;
    });
    assert.equal(result, 42);
    assert.equal(exporter.getFinishedSpans()[0].kind, SpanKind.CONSUMER);
  });
});
