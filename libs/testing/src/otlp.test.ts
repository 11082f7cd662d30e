import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OtlpSpanKind, startOtlpReceiver, type OtlpReceiver } from './otlp';

function tracerProvider(exporter: OTLPTraceExporter, serviceName: string): BasicTracerProvider {
  return new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
}

async function post(url: string, contentType: string, body: string | Buffer, headers: Record<string, string> = {}) {
  return fetch(`${url}/v1/traces`, { method: 'POST', headers: { 'content-type': contentType, ...headers }, body });
}

describe('startOtlpReceiver', () => {
  let receiver: OtlpReceiver;
  beforeEach(async () => {
    receiver = await startOtlpReceiver();
  });
  afterEach(async () => {
    await receiver.close();
  });

  it('receives spans from the real OTLP/HTTP exporter with parent, attributes, links and kind intact', async () => {
    const provider = tracerProvider(new OTLPTraceExporter({ url: `${receiver.url}/v1/traces` }), 'router');
    const tracer = provider.getTracer('keymesh.router');
    const linked = tracer.startSpan('upstream');
    linked.end();
    const parent = tracer.startSpan('POST /v1/chat/completions', { kind: SpanKind.SERVER });
    const child = tracer.startSpan(
      'limiter.Acquire',
      {
        kind: SpanKind.CLIENT,
        attributes: { 'keymesh.pool': 'openai-main', 'keymesh.tokens': 1234, 'keymesh.ratio': 0.25, 'keymesh.cached': false },
        links: [{ context: linked.spanContext() }],
      },
      trace.setSpan(ROOT_CONTEXT, parent),
    );
    child.end();
    parent.end();
    await provider.forceFlush();

    const spans = await receiver.waitForSpans((s) => s.length === 3, 5000);
    const got = spans.find((s) => s.name === 'limiter.Acquire')!;
    assert.deepEqual(got, {
      traceId: parent.spanContext().traceId,
      spanId: child.spanContext().spanId,
      parentSpanId: parent.spanContext().spanId,
      name: 'limiter.Acquire',
      kind: OtlpSpanKind.CLIENT,
      serviceName: 'router',
      scopeName: 'keymesh.router',
      attributes: { 'keymesh.pool': 'openai-main', 'keymesh.tokens': 1234, 'keymesh.ratio': 0.25, 'keymesh.cached': false },
      links: [{ traceId: linked.spanContext().traceId, spanId: linked.spanContext().spanId }],
    });
    const root = spans.find((s) => s.name === 'POST /v1/chat/completions')!;
    assert.equal(root.parentSpanId, undefined);
    assert.equal(root.kind, OtlpSpanKind.SERVER);
    await provider.shutdown();
  });

  it('serves as OTEL_EXPORTER_OTLP_ENDPOINT and accepts gzip', async () => {
    const saved = process.env['OTEL_EXPORTER_OTLP_ENDPOINT'];
    process.env['OTEL_EXPORTER_OTLP_ENDPOINT'] = receiver.url;
    let exporter: OTLPTraceExporter;
    try {
      exporter = new OTLPTraceExporter({ compression: CompressionAlgorithm.GZIP });
    } finally {
      if (saved === undefined) delete process.env['OTEL_EXPORTER_OTLP_ENDPOINT'];
      else process.env['OTEL_EXPORTER_OTLP_ENDPOINT'] = saved;
    }
    const provider = tracerProvider(exporter, 'cache');
    provider.getTracer('t').startSpan('cache.lookup').end();
    await provider.forceFlush();
    const [span] = await receiver.waitForSpans((s) => s.length === 1, 5000);
    assert.equal(span!.name, 'cache.lookup');
    assert.equal(span!.serviceName, 'cache');
    await provider.shutdown();
  });

  it('resolves waitForSpans when a later export satisfies the predicate', async () => {
    const provider = tracerProvider(new OTLPTraceExporter({ url: `${receiver.url}/v1/traces` }), 'svc');
    const waiting = receiver.waitForSpans((s) => s.some((x) => x.name === 'late'), 5000);
    provider.getTracer('t').startSpan('early').end();
    provider.getTracer('t').startSpan('late').end();
    const spans = await waiting;
    assert.ok(spans.some((s) => s.name === 'late'));
    await provider.shutdown();
  });

  it('rejects waitForSpans on timeout, listing the span names seen', async () => {
    const res = await post(receiver.url, 'application/json', JSON.stringify(request([span({ name: 'seen.one' })])));
    assert.equal(res.status, 200);
    await assert.rejects(
      receiver.waitForSpans((s) => s.some((x) => x.name === 'missing'), 100),
      /timed out after 100 ms waiting for spans; received 1: seen\.one/,
    );
  });

  it('answers 415 to protobuf and keeps nothing', async () => {
    const res = await post(receiver.url, 'application/x-protobuf', Buffer.from([0x0a, 0x00]));
    assert.equal(res.status, 415);
    assert.deepEqual(receiver.spans(), []);
  });

  it('answers 404 off /v1/traces and 400 to malformed JSON', async () => {
    assert.equal((await fetch(`${receiver.url}/v1/metrics`, { method: 'POST' })).status, 404);
    assert.equal((await post(receiver.url, 'application/json', '{nope')).status, 400);
  });

  it('decodes string intValues, doubles, arrays, base64 ids and named kinds', async () => {
    const traceHex = '0af7651916cd43dd8448eb211c80319c';
    const spanHex = 'b7ad6b7169203331';
    const body = request([
      span({
        traceId: Buffer.from(traceHex, 'hex').toString('base64'),
        spanId: Buffer.from(spanHex, 'hex').toString('base64'),
        parentSpanId: '',
        kind: 'SPAN_KIND_PRODUCER',
        attributes: [
          { key: 'big', value: { intValue: '9007199254740' } },
          { key: 'd', value: { doubleValue: 1.5 } },
          { key: 'b', value: { boolValue: true } },
          { key: 'arr', value: { arrayValue: { values: [{ stringValue: 'a' }, { intValue: 2 }] } } },
        ],
      }),
    ]);
    const res = await post(receiver.url, 'application/json', gzipSync(JSON.stringify(body)), { 'content-encoding': 'gzip' });
    assert.equal(res.status, 200);
    const [got] = receiver.spans();
    assert.equal(got!.traceId, traceHex);
    assert.equal(got!.spanId, spanHex);
    assert.equal(got!.parentSpanId, undefined);
    assert.equal(got!.kind, OtlpSpanKind.PRODUCER);
    assert.deepEqual(got!.attributes, { big: 9007199254740, d: 1.5, b: true, arr: '["a",2]' });
  });

  it('forgets received spans on clear()', async () => {
    await post(receiver.url, 'application/json', JSON.stringify(request([span({ name: 'x' })])));
    assert.equal(receiver.spans().length, 1);
    receiver.clear();
    assert.deepEqual(receiver.spans(), []);
  });

  it('rejects pending waits when closed', async () => {
    const waiting = receiver.waitForSpans(() => false, 5000);
    const other = await startOtlpReceiver();
    const closing = receiver;
    receiver = other;
    await closing.close();
    await assert.rejects(waiting, /closed/);
  });
});

function request(spans: object[]): object {
  return {
    resourceSpans: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: 'hand' } }] },
        scopeSpans: [{ scope: { name: 'hand.scope' }, spans }],
      },
    ],
  };
}

function span(fields: Record<string, unknown>): object {
  return {
    traceId: '5b8efff798038103d269b633813fc60c',
    spanId: 'eee19b7ec3c1b174',
    name: 'span',
    kind: 1,
    attributes: [],
    links: [],
    status: {},
    ...fields,
  };
}
