import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Redis from 'ioredis';
import { startMockProvider, type MockProvider } from '@keymesh/mock-provider';
import { edgePort, natsForTests, redisForTests, servingAddress, spawnNode, startOtlpReceiver, type ChildHandle, type ExternalServer, type OtlpReceiver, type ReceivedSpan } from '@keymesh/testing';
import { configYaml, secretOf, VIRTUAL_KEY } from './harness';

/** Removes this test's keys from a Redis that others may share (never a flush). */
async function deleteKeys(url: string, pattern: string): Promise<void> {
  const client = new Redis(url);
  try {
    for await (const keys of client.scanStream({ match: pattern, count: 500 }) as AsyncIterable<string[]>) {
      if (keys.length > 0) await client.del(...keys);
    }
  } finally {
    client.disconnect();
  }
}

const KEYMESH_BIN = resolve(__dirname, '../../../services/cli/bin/keymesh.js');

const HOPS = ['edge', 'router', 'cache', 'limiter', 'keyvault', 'provider', 'analytics'] as const;
type Hop = (typeof HOPS)[number];

/** Which hop of the request path a span stands for. */
function hopOf(span: ReceivedSpan): Hop | undefined {
  const component = span.attributes['keymesh.component'];
  if (component === 'edge' || component === 'router' || component === 'provider' || component === 'analytics') return component;
  if (span.kind === 2 /* SERVER */) {
    if (span.serviceName === 'keymesh-cache') return 'cache';
    if (span.serviceName === 'keymesh-limiter') return 'limiter';
    if (span.serviceName === 'keymesh-keyvault') return 'keyvault';
  }
  return undefined;
}

function hopsOfTrace(spans: ReceivedSpan[], traceId: string): Set<Hop> {
  const hops = new Set<Hop>();
  for (const span of spans) {
    if (span.traceId !== traceId) continue;
    const hop = hopOf(span);
    if (hop) hops.add(hop);
  }
  return hops;
}

async function askCachedRoute(port: number): Promise<void> {
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini-cached', messages: [{ role: 'user', content: `trace me ${Date.now()}` }] }),
  });
  assert.equal(response.status, 200, await response.text());
}

/** Waits until one request's trace holds every hop, and checks secrets never reached a span. */
async function assertOneTraceCoversThePath(receiver: OtlpReceiver): Promise<void> {
  const complete = (all: ReceivedSpan[]): boolean => {
    const edge = all.find((s) => s.name === 'POST /v1/chat/completions');
    return edge !== undefined && hopsOfTrace(all, edge.traceId).size === HOPS.length;
  };
  const spans = await receiver.waitForSpans(complete, 20_000).catch((err: unknown) => {
    const all = receiver.spans();
    const edge = all.find((s) => s.name === 'POST /v1/chat/completions');
    const seen = edge ? [...hopsOfTrace(all, edge.traceId)].join(', ') : 'no edge span';
    const tree = all.map((s) => `${s.serviceName} ${s.name} trace=${s.traceId.slice(0, 8)} parent=${s.parentSpanId ?? '-'} id=${s.spanId}`).join('\n  ');
    throw new Error(`${(err as Error).message}\nhops in the edge's trace: ${seen}\n  ${tree}`);
  });
  const edge = spans.find((s) => s.name === 'POST /v1/chat/completions');
  assert.ok(edge);
  assert.deepEqual([...hopsOfTrace(spans, edge.traceId)].sort(), [...HOPS].sort());
  const inTrace = spans.filter((s) => s.traceId === edge.traceId);
  const services = new Set(inTrace.map((s) => s.serviceName));
  for (const service of ['keymesh-router', 'keymesh-cache', 'keymesh-limiter', 'keymesh-keyvault', 'keymesh-analytics']) {
    assert.ok(services.has(service), `no span from ${service}; saw ${[...services].join(', ')}`);
  }
  const text = JSON.stringify(spans);
  for (const secret of [secretOf(0), secretOf(1), secretOf(2), VIRTUAL_KEY]) assert.ok(!text.includes(secret), 'a secret reached a span');
}

describe('one trace covers edge → router → cache → limiter → key-vault → provider → analytics', function () {
  this.timeout(60_000);
  let receiver: OtlpReceiver;
  let mock: MockProvider;
  let dir: string;
  const children: ChildHandle[] = [];

  beforeEach(async function () {
    receiver = await startOtlpReceiver();
    mock = await startMockProvider({ keys: [0, 1, 2].map((i) => ({ secret: secretOf(i) })) });
    dir = await mkdtemp(join(tmpdir(), 'keymesh-trace-'));
  });
  afterEach(async function () {
    await Promise.all(children.splice(0).map((c) => c.stop('SIGTERM', 5_000)));
    await mock.close();
    await receiver.close();
    await rm(dir, { recursive: true, force: true });
  });

  const otelEnv = () => ({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '50', KEYMESH_LOG_LEVEL: 'warn' });

  it('when every service runs in one process as `keymesh up` runs them', async function () {
    const configPath = join(dir, 'keymesh.yaml');
    await writeFile(configPath, configYaml(mock.url));
    const up = spawnNode(KEYMESH_BIN, ['up', '--config', configPath], {
      env: { ...otelEnv(), KEYMESH_HTTP_PORT: '0', KEYMESH_GRPC_PORT: '0', NATS_URL: undefined, REDIS_URL: undefined },
    });
    children.push(up);
    await askCachedRoute(await edgePort(up));
    await assertOneTraceCoversThePath(receiver);
  });

  it('when each service runs as its own `keymesh serve` process over NATS, with limits in Redis', async function () {
    const nats: ExternalServer = await natsForTests();
    const redis: ExternalServer = await redisForTests();
    const redisPrefix = `keymesh-e2e-${randomBytes(6).toString('hex')}`;
    try {
      const configPath = join(dir, 'keymesh.yaml');
      await writeFile(configPath, configYaml(mock.url));
      const env: Record<string, string | undefined> = {
        ...otelEnv(),
        NATS_URL: nats.url,
        REDIS_URL: redis.url,
        // A prefix of its own: the shared Redis may hold other deployments' limits.
        KEYMESH_REDIS_PREFIX: redisPrefix,
        KEYMESH_MASTER_KEY: randomBytes(32).toString('base64'),
        KEYMESH_ROUTER_TOKEN: randomBytes(16).toString('hex'),
        KEYMESH_HTTP_PORT: '0',
      };
      // Each on port 0, in an order where a service's peers are already up: its address goes to those started after it.
      let edge = 0;
      for (const name of ['control', 'keyvault', 'limiter', 'cache', 'analytics', 'router'] as const) {
        const args = ['serve', name, '--port', '0', ...(name === 'control' ? ['--config', configPath] : [])];
        const child = spawnNode(KEYMESH_BIN, args, { env });
        children.push(child);
        env[`KEYMESH_${name.toUpperCase()}_ADDR`] = await servingAddress(child, name);
        if (name === 'router') edge = await edgePort(child);
      }
      await askCachedRoute(edge);
      await assertOneTraceCoversThePath(receiver);
    } finally {
      await Promise.all(children.splice(0).map((c) => c.stop('SIGTERM', 5_000)));
      await deleteKeys(redis.url, `${redisPrefix}:*`);
      await nats.stop();
      await redis.stop();
    }
  });
});
