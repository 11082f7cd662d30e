import assert from 'node:assert/strict';
import { Code, KeymeshError } from '@keymesh/errors';
import { KeyCondition, LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { RouterService } from '@keymesh/proto/router/v1/router';
import { closeRpcClient, createRpcClient, type RpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { createServer, type Server, type Socket } from 'node:net';
import { waitFor } from '@keymesh/testing';
import type { MockFailures } from '@keymesh/mock-provider';
import { secretOf, startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

/** How a request ended, as its caller saw it. */
interface Outcome {
  readonly what: string;
  readonly startedMs: number;
  readonly timeoutMs: number;
  readonly elapsedMs: number;
  readonly status: number;
  /** 'done' ([DONE] or a whole JSON body), 'error' (an error body or event), 'left' (the caller hung up), or why it was lost. */
  readonly end: 'done' | 'error' | 'left' | `lost: ${string}`;
}

/** How far past its deadline a request may end: the budget this sweep enforces. */
const SLACK_MS = 100;
const DEADLINES_MS = [250, 500, 900];
const ROUTE = 'gpt-sweep';

function post(t: TestMesh, timeoutMs: number, content: string, stream: boolean, signal?: AbortSignal): Promise<Response> {
  return fetch(`${t.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json', 'x-keymesh-timeout': String(timeoutMs) },
    body: JSON.stringify({ model: ROUTE, messages: [{ role: 'user', content }], ...(stream ? { stream: true } : {}) }),
    ...(signal ? { signal } : {}),
  });
}

async function unary(t: TestMesh, timeoutMs: number, what: string): Promise<Outcome> {
  const started = Date.now();
  try {
    const response = await post(t, timeoutMs, what, false);
    const text = await response.text();
    const parsed = JSON.parse(text) as { choices?: unknown; error?: unknown };
    const end = response.status === 200 && parsed.choices !== undefined ? 'done' : parsed.error !== undefined ? 'error' : 'lost: no body';
    return { what, startedMs: started, timeoutMs, elapsedMs: Date.now() - started, status: response.status, end };
  } catch (err) {
    return { what, startedMs: started, timeoutMs, elapsedMs: Date.now() - started, status: 0, end: `lost: ${String(err)}` };
  }
}

/** A stream read to its end, which must be [DONE] or an error event: a stream that just stops is lost. */
async function stream(t: TestMesh, timeoutMs: number, what: string): Promise<Outcome> {
  const started = Date.now();
  try {
    const response = await post(t, timeoutMs, what, true);
    const text = await response.text();
    let end: Outcome['end'];
    if (response.status !== 200) end = text.includes('"error"') ? 'error' : 'lost: no error body';
    else if (text.includes('data: [DONE]')) end = 'done';
    else if (/^data: \{"error"/m.test(text)) end = 'error';
    else end = 'lost: the stream stopped without [DONE] or an error event';
    return { what, startedMs: started, timeoutMs, elapsedMs: Date.now() - started, status: response.status, end };
  } catch (err) {
    return { what, startedMs: started, timeoutMs, elapsedMs: Date.now() - started, status: 0, end: `lost: ${String(err)}` };
  }
}

/** A caller that reads the first bytes of a stream and hangs up. */
async function leaver(t: TestMesh, timeoutMs: number, what: string): Promise<Outcome> {
  const started = Date.now();
  const controller = new AbortController();
  try {
    const response = await post(t, timeoutMs, what, true, controller.signal);
    if (response.status === 200 && response.body) {
      const reader = response.body.getReader();
      await reader.read();
    }
    controller.abort();
    return { what, startedMs: started, timeoutMs, elapsedMs: Date.now() - started, status: response.status, end: 'left' };
  } catch (err) {
    controller.abort();
    return { what, startedMs: started, timeoutMs, elapsedMs: Date.now() - started, status: 0, end: 'left' };
  }
}

/**
 * How long this process was not running its event loop, over time: the mesh
 * and the callers share it, on a machine whose cores are shared with other
 * work. A stall delays a deadline's timer and the answer alike, whatever
 * keymesh does, so lateness is judged net of the stalls a request lived through.
 */
class StallMeter {
  private readonly stalls: { atMs: number; ms: number }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private static readonly TICK_MS = 5;

  start(): void {
    let expected = Date.now() + StallMeter.TICK_MS;
    const tick = (): void => {
      const now = Date.now();
      if (now - expected > 0) this.stalls.push({ atMs: now, ms: now - expected });
      expected = now + StallMeter.TICK_MS;
      this.timer = setTimeout(tick, StallMeter.TICK_MS);
    };
    this.timer = setTimeout(tick, StallMeter.TICK_MS);
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /** Stalled time that ended within [fromMs, toMs]. */
  within(fromMs: number, toMs: number): number {
    let total = 0;
    for (const s of this.stalls) if (s.atMs >= fromMs && s.atMs <= toMs) total += s.ms;
    return total;
  }

  get maxMs(): number {
    return this.stalls.reduce((max, s) => Math.max(max, s.ms), 0);
  }
}

type RouterClient = ReturnType<typeof createRpcClient<typeof RouterService>>;

/**
 * The same over gRPC, whose callers hold the same bulkhead slots: the call's deadline is the caller's.
 * Any status is an answer; only a call that outlives its deadline is late.
 */
async function overGrpc(router: RouterClient, timeoutMs: number, what: string, stream: boolean): Promise<Outcome> {
  const started = Date.now();
  const options = { headers: { authorization: `Bearer ${VIRTUAL_KEY}` }, timeoutMs };
  const request = { model: ROUTE, messages: [{ role: 'user', content: what }] };
  try {
    if (stream) {
      let finished = false;
      for await (const delta of router.chatStream(request, options)) finished ||= delta.finishReason !== '';
      return { what, startedMs: started, timeoutMs, elapsedMs: Date.now() - started, status: 200, end: finished ? 'done' : 'lost: the stream ended without a finish reason' };
    }
    await router.chat(request, options);
    return { what, startedMs: started, timeoutMs, elapsedMs: Date.now() - started, status: 200, end: 'done' };
  } catch (err) {
    const code = err instanceof KeymeshError ? err.code : Code.Unknown;
    return { what, startedMs: started, timeoutMs, elapsedMs: Date.now() - started, status: -code, end: code === Code.Unknown ? `lost: ${String(err)}` : 'error' };
  }
}

function parseGauges(metrics: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.lastIndexOf('}');
    out.set(line.slice(name.length, close + 1), Number(line.slice(close + 2)));
  }
  return out;
}

/** How the limiter sees a key of the pool now (parked, cooling, ...). */
async function conditionOf(limiter: RpcClient<typeof LimiterService>, keyId: string): Promise<KeyCondition | undefined> {
  const { keys } = await limiter.getKeyState({ poolId: 'main' });
  return keys.find((k) => k.keyId === keyId)?.condition;
}

/**
 * The sweep, on a pool admitted from capacity leases and on one whose keys
 * have a concurrency limit (admitted per request, each holding its key's slot
 * until it ends): either way nothing may stay held once every request ended.
 */
function sweepSuite(declaredLimit: string) {
  return function (this: Mocha.Suite): void {
  this.timeout(60_000);
  let t: TestMesh;
  let router: RouterClient;
  let limiter: RpcClient<typeof LimiterService>;

  before(async function () {
    t = await startTestMesh({
      // Limits keymesh is told, so the limiter counts leased slots and the sweep can check they all come back.
      declaredLimits: [declaredLimit, declaredLimit, declaredLimit],
      providerTimeout: '200ms',
      streamChunkDelayMs: 40,
      extraRoutes: `  ${ROUTE}: { targets: [ { pool: main, model: gpt-4o-mini } ], max_concurrency: 12 }`,
    });
    router = createRpcClient(RouterService, t.grpcAddress, { telemetry: createTelemetry('e2e-client') });
    const limiterAddress = t.mesh.parts.find((p) => p.name === 'limiter')!.where;
    limiter = createRpcClient(LimiterService, limiterAddress, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 5_000 });
  });
  after(async function () {
    if (router) closeRpcClient(router);
    if (limiter) closeRpcClient(limiter);
    await t?.stop();
  });

  it('lets a healthy stream run past the provider timeout, which bounds only the wait for its first byte', async function () {
    t.mock.setFailures({});
    t.mock.setLatency(0);
    // Eight chunks 40 ms apart: longer than the 200 ms provider timeout, well inside the deadline.
    const outcome = await stream(t, 5_000, 'a long healthy stream');
    assert.equal(outcome.status, 200);
    assert.equal(outcome.end, 'done');
  });

  it('ends every request by its deadline, and leaves no bulkhead slot, lease or concurrency hold held', async function () {
    // Each phase sets the provider's misbehaviour for requests that reach it from then on; earlier ones still run.
    // The 503 burst comes late: it opens the provider's breaker, after which every request is refused at once.
    // `met` is the mock counter that shows the phase's misbehaviour reached the provider.
    // k3 is revoked while its breaker is still closed: once hangs and cuts open it, the router calls k3 no more and could not park it.
    const phases: { name: string; failures: MockFailures; latencyMs: number; met: 'ok' | 'failed' | 'unauthorized'; act?: () => void; parks?: string }[] = [
      { name: 'healthy', failures: {}, latencyMs: 20, met: 'ok' },
      { name: 'k3 revoked', failures: {}, latencyMs: 20, met: 'unauthorized', act: () => t.mock.revokeKey(secretOf(2)), parks: 'k3' },
      { name: 'hangs', failures: { hangRate: 0.3 }, latencyMs: 20, met: 'failed' },
      { name: 'streams cut after their first byte', failures: { cutStreamAfterChunks: 0 }, latencyMs: 20, met: 'failed' },
      { name: 'slow, streams cut mid-way', failures: { cutStreamAfterChunks: 3 }, latencyMs: 150, met: 'failed' },
      { name: 'streams hang before their first byte', failures: { hangRate: 0.3 }, latencyMs: 0, met: 'failed' },
      { name: '503 burst', failures: { errorRate: 1 }, latencyMs: 0, met: 'failed' },
      { name: 'healthy again', failures: {}, latencyMs: 20, met: 'ok' },
    ];
    // A cold process compiles its hot paths during its first requests; that is not what deadlines are about.
    for (let i = 0; i < 3; i++) {
      await Promise.all([unary(t, 5_000, `warm-up ${i}`), stream(t, 5_000, `warm-up stream ${i}`), overGrpc(router, 5_000, `warm-up grpc ${i}`, true)]);
    }
    const stalls = new StallMeter();
    stalls.start();
    const all: Promise<Outcome>[] = [];
    let n = 0;
    for (const phase of phases) {
      t.mock.setFailures(phase.failures);
      t.mock.setLatency(phase.latencyMs);
      phase.act?.();
      const before = t.mock.stats()[phase.met];
      const batch: Promise<Outcome>[] = [];
      const deadline = (): number => DEADLINES_MS[n++ % DEADLINES_MS.length]!;
      for (let i = 0; i < 3; i++) batch.push(unary(t, deadline(), `${phase.name}: unary ${i}`));
      for (let i = 0; i < 3; i++) batch.push(stream(t, deadline(), `${phase.name}: stream ${i}`));
      for (let i = 0; i < 2; i++) batch.push(leaver(t, deadline(), `${phase.name}: leaver ${i}`));
      batch.push(overGrpc(router, deadline(), `${phase.name}: grpc unary`, false), overGrpc(router, deadline(), `${phase.name}: grpc stream`, true));
      all.push(...batch);
      // The next phase starts once this one's misbehaviour has met the provider and half its requests have
      // ended, so phases overlap (hung requests spill over) without the bulkhead refusing all of the next one.
      let settled = 0;
      for (const p of batch) void p.then(() => settled++);
      await waitFor(() => (t.mock.stats()[phase.met] > before && settled * 2 >= batch.length) || settled === batch.length, {
        timeoutMs: 5_000,
        what: `phase "${phase.name}" to reach the provider`,
      });
      // A batch can end before its misbehaviour met the provider (leases sent it all to the other keys),
      // and a 401 that comes back to a caller already gone parks nothing: a few more requests make sure
      // every phase really happened.
      const happened = async (): Promise<boolean> =>
        t.mock.stats()[phase.met] > before && (phase.parks === undefined || (await conditionOf(limiter, phase.parks)) === KeyCondition.PARKED);
      for (let extra = 0; !(await happened()) && extra < 30; extra++) {
        const more = unary(t, deadline(), `${phase.name}: extra unary ${extra}`);
        all.push(more);
        await more;
      }
    }
    const outcomes = await Promise.all(all);
    stalls.stop();

    const lost = outcomes.filter((o) => o.end.startsWith('lost'));
    assert.deepEqual(lost, [], 'every request ended in an answer or an error');
    const late = outcomes
      .filter((o) => o.end !== 'left')
      .map((o) => ({ ...o, stalledMs: stalls.within(o.startedMs, o.startedMs + o.elapsedMs) }))
      .filter((o) => o.elapsedMs - o.stalledMs > o.timeoutMs + SLACK_MS);
    assert.deepEqual(late, [], `none outlived its deadline by more than ${SLACK_MS} ms (longest event-loop stall ${stalls.maxMs} ms)`);
    const statuses = new Map<number, number>();
    for (const o of outcomes) statuses.set(o.status, (statuses.get(o.status) ?? 0) + 1);
    // The mix really was a mix: some served, some timed out, some refused.
    assert.ok((statuses.get(200) ?? 0) > 0, `statuses ${[...statuses]}`);
    assert.ok(outcomes.some((o) => o.status === 504 || (o.status === 200 && o.end === 'error')), `statuses ${[...statuses]}`);

    // Every bulkhead slot came back: the gauges read 0 once the last hung-up caller's socket closed.
    const metricsUrl = t.baseUrl.replace(/\/v1$/, '/metrics');
    await waitFor(
      async () => {
        const inflight = parseGauges(await (await fetch(metricsUrl)).text(), 'keymesh_inflight_requests');
        return inflight.get(`{scope="route",name="${ROUTE}"}`) === 0 && [...inflight.values()].every((v) => v === 0);
      },
      { timeoutMs: 1_000, what: 'every bulkhead slot to be given back' },
    );

    // Leased slots count against a key only until their hold (at most the 2 s window here) ends.
    const keys = await waitFor(
      async () => {
        const { keys } = await limiter.getKeyState({ poolId: 'main' });
        const usable = keys.filter((k) => k.condition !== KeyCondition.PARKED);
        // Holds are released as their requests end, long before their 30 s TTL could free them.
        if (usable.every((k) => k.remainingRequests === k.limitRequests) && keys.every((k) => k.holdsInFlight === 0)) return keys;
        // Thrown so that a timeout says which key still held what.
        const held = keys.map((k) => `${k.keyId} ${KeyCondition[k.condition]} ${k.remainingRequests}/${k.limitRequests} left, ${k.holdsInFlight} holds`);
        throw new Error(held.join('; '));
      },
      { timeoutMs: 4_000, what: 'every leased slot to expire and every hold to be released' },
    );
    assert.equal(keys.find((k) => k.keyId === 'k3')?.condition, KeyCondition.PARKED, 'the revoked key was parked');
  });
  };
}

describe('deadlines and leaks under a mix of provider failures, from capacity leases', sweepSuite('{ requests: 1000, per: 2s }'));
describe('deadlines and leaks under a mix of provider failures, holding concurrency slots', sweepSuite('{ requests: 1000, per: 2s, concurrency: 50 }'));

describe('deadlines while the limiter cannot answer', function () {
  this.timeout(30_000);
  let t: TestMesh | undefined;
  let blackhole: Server | undefined;
  const sockets: Socket[] = [];

  after(async function () {
    for (const socket of sockets) socket.destroy();
    blackhole?.close();
    await t?.stop();
  });

  it('answers 504 at the deadline instead of waiting out a lease grant that hangs', async function () {
    t = await startTestMesh({ mockKeys: [{}], extraRoutes: `  ${ROUTE}: { targets: [ { pool: main, model: gpt-4o-mini } ] }` });
    const mesh = t;
    assert.equal((await unary(mesh, 5_000, 'warm-up')).end, 'done');
    // The limiter goes away and something that accepts connections but never speaks takes its port:
    // the router's next lease grant waits for its own 2 s timeout.
    const limiter = mesh.mesh.parts.find((p) => p.name === 'limiter')!;
    const port = Number(limiter.where.split(':').pop());
    await limiter.stop();
    blackhole = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => blackhole!.listen(port, '127.0.0.1', resolve));

    // Leased slots run out within one hold; from then on every admission waits on a grant.
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 4; i++) outcomes.push(await unary(mesh, 300, `while the limiter hangs ${i}`));
    const late = outcomes.filter((o) => o.elapsedMs > o.timeoutMs + SLACK_MS);
    assert.deepEqual(late, [], `none outlived its deadline by more than ${SLACK_MS} ms`);
    assert.ok(outcomes.some((o) => o.status === 504), `statuses ${outcomes.map((o) => o.status).join(' ')}`);
  });
});

describe('x-keymesh-timeout', function () {
  let t: TestMesh;
  before(async function () {
    t = await startTestMesh({ mockKeys: [{}] });
  });
  after(async function () {
    await t?.stop();
  });

  function ask(timeout: string, stream: boolean): Promise<Response> {
    return fetch(`${t.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json', 'x-keymesh-timeout': timeout },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'timeout header' }], ...(stream ? { stream: true } : {}) }),
    });
  }

  it('refuses a timeout it cannot read with 400 naming the header, rather than running under the route default', async function () {
    for (const timeout of ['soon', '0', '0ms', '-5', '1h', '5 seconds', '2.5.1s']) {
      for (const stream of [false, true]) {
        const response = await ask(timeout, stream);
        assert.equal(response.status, 400, `"${timeout}" (stream: ${stream})`);
        const body = (await response.json()) as { error: { message: string; param?: string } };
        assert.match(body.error.message, /x-keymesh-timeout/);
      }
    }
  });

  it('accepts milliseconds and durations', async function () {
    for (const timeout of ['2500', '2.5s', '500ms', ' 3s ']) assert.equal((await ask(timeout, false)).status, 200, timeout);
  });
});
