import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync, inflateSync } from 'node:zlib';

/** OTLP span kinds as they travel on the wire (the API's SpanKind + 1). */
export const OtlpSpanKind = {
  UNSPECIFIED: 0,
  INTERNAL: 1,
  SERVER: 2,
  CLIENT: 3,
  PRODUCER: 4,
  CONSUMER: 5,
} as const;

export type AttributeValue = string | number | boolean;

export interface ReceivedSpan {
  /** Lowercase hex, 32 chars. */
  traceId: string;
  /** Lowercase hex, 16 chars. */
  spanId: string;
  /** Undefined for a root span. */
  parentSpanId: string | undefined;
  name: string;
  /** OTLP wire value: see OtlpSpanKind (SERVER is 2, not the API's 1). */
  kind: number;
  /** The resource's `service.name`, or '' when absent. */
  serviceName: string;
  scopeName: string;
  /** Arrays, kvlists and bytes arrive as JSON / base64 strings. */
  attributes: Record<string, AttributeValue>;
  links: { traceId: string; spanId: string }[];
}

export interface OtlpReceiver {
  /** Base URL, e.g. http://127.0.0.1:PORT; suitable for OTEL_EXPORTER_OTLP_ENDPOINT. */
  url: string;
  /** Every span received since start or the last clear(), in arrival order. */
  spans(): ReceivedSpan[];
  /**
   * Resolves with all spans as soon as `predicate(spans)` holds, checked now
   * and after each export arrives; rejects after `timeoutMs` listing what came.
   */
  waitForSpans(predicate: (spans: ReceivedSpan[]) => boolean, timeoutMs: number): Promise<ReceivedSpan[]>;
  clear(): void;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 32 * 1024 * 1024;

interface Waiter {
  predicate: (spans: ReceivedSpan[]) => boolean;
  resolve: (spans: ReceivedSpan[]) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * An OTLP/HTTP trace receiver on 127.0.0.1: POST /v1/traces with
 * application/json is decoded and kept; application/x-protobuf gets 415.
 */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  let received: ReceivedSpan[] = [];
  const waiters = new Set<Waiter>();

  const settle = (): void => {
    for (const waiter of [...waiters]) {
      let holds: boolean;
      try {
        holds = waiter.predicate(received);
      } catch (err) {
        finishWaiter(waiter);
        waiter.reject(err as Error);
        continue;
      }
      if (holds) {
        finishWaiter(waiter);
        waiter.resolve([...received]);
      }
    }
  };
  const finishWaiter = (waiter: Waiter): void => {
    clearTimeout(waiter.timer);
    waiters.delete(waiter);
  };

  const server = createServer((req, res) => {
    handle(req, res)
      .then((spans) => {
        if (spans.length > 0) {
          received.push(...spans);
          settle();
        }
      })
      .catch((err: unknown) => {
        if (!res.headersSent) reply(res, 500, { message: String(err) });
      });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<ReceivedSpan[]> {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/v1/traces') {
      reply(res, 404, { message: `only /v1/traces is served, not ${path}` });
      return [];
    }
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      reply(res, 405, { message: 'POST only' });
      return [];
    }
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (contentType !== 'application/json') {
      req.resume();
      reply(res, 415, { message: `unsupported content-type ${contentType || '(none)'}; this receiver takes OTLP JSON only` });
      return [];
    }
    let body: Buffer;
    try {
      body = decompress(await readBody(req), req.headers['content-encoding']);
    } catch (err) {
      reply(res, (err as { status?: number }).status ?? 400, { message: (err as Error).message });
      return [];
    }
    let spans: ReceivedSpan[];
    try {
      spans = decodeTraces(JSON.parse(body.toString('utf8')));
    } catch (err) {
      reply(res, 400, { message: `bad OTLP JSON: ${(err as Error).message}` });
      return [];
    }
    reply(res, 200, {});
    return spans;
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    spans: () => [...received],
    waitForSpans(predicate, timeoutMs) {
      return new Promise((resolve, reject) => {
        if (predicate(received)) {
          resolve([...received]);
          return;
        }
        const waiter: Waiter = {
          predicate,
          resolve,
          reject,
          timer: setTimeout(() => {
            finishWaiter(waiter);
            const names = received.map((s) => s.name);
            reject(
              new Error(
                `timed out after ${timeoutMs} ms waiting for spans; received ${names.length}` +
                  (names.length ? `: ${names.join(', ')}` : ''),
              ),
            );
          }, timeoutMs),
        };
        waiters.add(waiter);
      });
    },
    clear() {
      received = [];
    },
    close() {
      for (const waiter of [...waiters]) {
        finishWaiter(waiter);
        waiter.reject(new Error('OTLP receiver closed while waiting for spans'));
      }
      return new Promise((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}

function reply(res: ServerResponse, status: number, body: object): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.destroy();
        reject(Object.assign(new Error(`body over ${MAX_BODY_BYTES} bytes`), { status: 413 }));
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

function decompress(body: Buffer, encoding: string | undefined): Buffer {
  switch ((encoding ?? 'identity').trim().toLowerCase()) {
    case 'identity':
    case '':
      return body;
    case 'gzip':
      return gunzipSync(body);
    case 'deflate':
      return inflateSync(body);
    default:
      throw Object.assign(new Error(`unsupported content-encoding ${encoding}`), { status: 415 });
  }
}

// ---- OTLP JSON decoding --------------------------------------------------

type Json = Record<string, unknown>;

const SPAN_KIND_NAMES: Record<string, number> = {
  SPAN_KIND_UNSPECIFIED: 0,
  SPAN_KIND_INTERNAL: 1,
  SPAN_KIND_SERVER: 2,
  SPAN_KIND_CLIENT: 3,
  SPAN_KIND_PRODUCER: 4,
  SPAN_KIND_CONSUMER: 5,
};

/** Flattens an ExportTraceServiceRequest in OTLP JSON into spans. */
export function decodeTraces(request: unknown): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const resourceSpans of list(obj(request)['resourceSpans'])) {
    const rs = obj(resourceSpans);
    const resourceAttributes = decodeAttributes(obj(rs['resource'])['attributes']);
    const serviceName = String(resourceAttributes['service.name'] ?? '');
    for (const scopeSpans of list(rs['scopeSpans'] ?? rs['instrumentationLibrarySpans'])) {
      const ss = obj(scopeSpans);
      const scopeName = String(obj(ss['scope'] ?? ss['instrumentationLibrary'])['name'] ?? '');
      for (const span of list(ss['spans'])) {
        const s = obj(span);
        const parent = s['parentSpanId'];
        out.push({
          traceId: decodeId(s['traceId'], 16),
          spanId: decodeId(s['spanId'], 8),
          parentSpanId: parent === undefined || parent === null || parent === '' ? undefined : decodeId(parent, 8),
          name: String(s['name'] ?? ''),
          kind: decodeKind(s['kind']),
          serviceName,
          scopeName,
          attributes: decodeAttributes(s['attributes']),
          links: list(s['links']).map((link) => {
            const l = obj(link);
            return { traceId: decodeId(l['traceId'], 16), spanId: decodeId(l['spanId'], 8) };
          }),
        });
      }
    }
  }
  return out;
}

/** OTLP JSON carries ids as hex; plain protobuf-JSON mappers use base64. Accept both, return lowercase hex. */
function decodeId(value: unknown, bytes: number): string {
  const text = String(value ?? '');
  if (text.length === bytes * 2 && /^[0-9a-f]+$/i.test(text)) return text.toLowerCase();
  const decoded = Buffer.from(text, 'base64');
  if (decoded.length === bytes) return decoded.toString('hex');
  return text.toLowerCase();
}

function decodeKind(value: unknown): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'string') return SPAN_KIND_NAMES[value] ?? (Number(value) || 0);
  return 0;
}

function decodeAttributes(value: unknown): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const kv of list(value)) {
    const { key, value: v } = obj(kv);
    if (typeof key !== 'string') continue;
    const decoded = decodeAnyValue(v);
    out[key] = typeof decoded === 'object' && decoded !== null ? JSON.stringify(decoded) : (decoded ?? '');
  }
  return out;
}

type Decoded = AttributeValue | null | Decoded[] | { [key: string]: Decoded };

function decodeAnyValue(value: unknown): Decoded {
  const v = obj(value);
  if ('stringValue' in v) return String(v['stringValue']);
  if ('boolValue' in v) return v['boolValue'] === true || v['boolValue'] === 'true';
  if ('intValue' in v) return Number(v['intValue']);
  if ('doubleValue' in v) return Number(v['doubleValue']);
  if ('bytesValue' in v) return String(v['bytesValue']);
  if ('arrayValue' in v) return list(obj(v['arrayValue'])['values']).map(decodeAnyValue);
  if ('kvlistValue' in v) {
    const entries: { [key: string]: Decoded } = {};
    for (const kv of list(obj(v['kvlistValue'])['values'])) {
      const { key, value: inner } = obj(kv);
      if (typeof key === 'string') entries[key] = decodeAnyValue(inner);
    }
    return entries;
  }
  return null;
}

function obj(value: unknown): Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : {};
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}
