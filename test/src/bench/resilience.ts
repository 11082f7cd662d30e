/**
 * The correctness scenarios of the bench: `exhaustion` (does the limiter keep
 * callers and providers away from "keys temporarily exhausted"?) and
 * `failure-mix` (do fallbacks hide a failing provider and a revoked key?).
 *
 * Unlike the throughput scenarios, these run the mock provider in this process
 * (`startMockProvider`), so its per-key counters (`stats()`) and controls
 * (`revokeKey`, `setFailures`) are at hand, and drive load with a small client
 * in this process too. The rates are low or the questions are about outcomes,
 * not CPU, so sharing the orchestrator's event loop is fine. keymesh still runs
 * as its own `keymesh up` process, with a config written for each scenario.
 */
import { performance } from "node:perf_hooks";
import { startMockProvider, type MockKeyStats, type MockProvider } from "@keymesh/mock-provider";
import { Pool } from "undici";
import { check, fmtMs, fmtPct, percentile, renderTable, type Check } from "./report";

export const RESILIENCE_SCENARIOS = [
  { name: "exhaustion", title: "4 keys x 20 requests per 2 s, open loop at 75% and 150% of capacity" },
  { name: "failure-mix", title: "two providers as fallbacks, 10% 503s and a revoked key on the first, closed loop c=16" },
] as const;

export type ResilienceName = (typeof RESILIENCE_SCENARIOS)[number]["name"];

/** What run.ts lends these scenarios. */
export interface ResilienceContext {
  /** Starts `keymesh up` with this config; stopped by the caller (and by the bench on exit). */
  startKeymesh(name: string, configYaml: string): Promise<KeymeshHandle>;
  /** Races a promise with the bench's fatal errors (a service died). */
  guard<T>(work: Promise<T>): Promise<T>;
  log(message: string): void;
}

export interface KeymeshHandle {
  origin: string;
  stop(): Promise<void>;
}

export interface ResilienceResult {
  name: ResilienceName;
  text: string;
  checks: Check[];
  json: unknown;
}

const VIRTUAL_KEY = "sk-keymesh-bench";
const MODEL = "gpt-4o-mini";
const CHAT_PATH = "/v1/chat/completions";
const BODY = JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "Say hello in five words." }], max_tokens: 32 });
/** Client-side cap on one request; keymesh's route timeout (below) is shorter. */
const CLIENT_TIMEOUT_MS = 15_000;

// exhaustion
const EX_KEYS = 4;
const EX_REQUESTS_PER_WINDOW = 20;
const EX_WINDOW_MS = 2_000;
const EX_WINDOWS_PER_RUN = 4;
const EX_CAPACITY_RPS = (EX_KEYS * EX_REQUESTS_PER_WINDOW * 1000) / EX_WINDOW_MS;
const EX_ROUTE_TIMEOUT = "5s";
// Requests that find every key momentarily full wait in line (by priority, then arrival) for this long.
const EX_MAX_WAIT = "2s";

// failure-mix
const FM_CONCURRENCY = 16;
const FM_SECONDS = 6;
const FM_ERROR_RATE = 0.1;
const FM_LATENCY_MS = 5;

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}

// ---------------------------------------------------------------- client

interface Outcome {
  /** 0: network error or client timeout. */
  status: number;
  retryAfter: boolean;
  /** From x-keymesh-attempts; NaN when absent. */
  attempts: number;
  latencyMs: number;
  /** When the answer ended (performance.now()). */
  endMs: number;
  /** Status and start of the body, for the first failure shown. */
  failure: string | null;
}

async function send(pool: Pool): Promise<Outcome> {
  const start = performance.now();
  try {
    const response = await pool.request({
      method: "POST",
      path: CHAT_PATH,
      headers: { "content-type": "application/json", authorization: `Bearer ${VIRTUAL_KEY}` },
      body: BODY,
      headersTimeout: CLIENT_TIMEOUT_MS,
      bodyTimeout: CLIENT_TIMEOUT_MS,
    });
    const text = await response.body.text();
    const ok = response.statusCode >= 200 && response.statusCode <= 299;
    const attemptsHeader = response.headers["x-keymesh-attempts"];
    return {
      status: response.statusCode,
      retryAfter: response.headers["retry-after"] !== undefined,
      attempts: typeof attemptsHeader === "string" ? Number(attemptsHeader) : NaN,
      latencyMs: performance.now() - start,
      endMs: performance.now(),
      failure: ok ? null : `HTTP ${response.statusCode}: ${text.replace(/\s+/g, " ").slice(0, 300)}`,
    };
  } catch (error) {
    return {
      status: 0, retryAfter: false, attempts: NaN, latencyMs: performance.now() - start, endMs: performance.now(),
      failure: `network error: ${error instanceof Error ? error.message : String(error)}`,
    };
  }
}

/** Open loop: `rateRps` arrivals per second for `durationMs` (late timers catch up), then waits for every answer. */
async function openLoop(origin: string, rateRps: number, durationMs: number): Promise<{ outcomes: Outcome[]; startMs: number }> {
  const pool = new Pool(origin, { connections: 256, pipelining: 1, keepAliveTimeout: 60_000 });
  const pending: Promise<Outcome>[] = [];
  const intervalMs = 1000 / rateRps;
  const startMs = performance.now();
  const total = Math.round((rateRps * durationMs) / 1000);
  try {
    await new Promise<void>((done) => {
      const tick = (): void => {
        const nowMs = performance.now();
        while (pending.length < total && startMs + pending.length * intervalMs <= nowMs) pending.push(send(pool));
        if (pending.length >= total) done();
        else setTimeout(tick, Math.max(0, startMs + pending.length * intervalMs - performance.now()));
      };
      tick();
    });
    return { outcomes: await Promise.all(pending), startMs };
  } finally {
    await pool.destroy();
  }
}

/** Closed loop: `concurrency` requests in flight for `durationMs`; answers that end after it are not counted. */
async function closedLoop(origin: string, concurrency: number, durationMs: number): Promise<{ outcomes: Outcome[]; measuredMs: number }> {
  const pool = new Pool(origin, { connections: concurrency, pipelining: 1, keepAliveTimeout: 60_000 });
  const outcomes: Outcome[] = [];
  const startMs = performance.now();
  const endMs = startMs + durationMs;
  const worker = async (): Promise<void> => {
    while (performance.now() < endMs) {
      const outcome = await send(pool);
      if (performance.now() <= endMs) outcomes.push(outcome);
      if (outcome.status === 0) await sleep(10);
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { outcomes, measuredMs: durationMs };
  } finally {
    await pool.destroy();
  }
}

// ---------------------------------------------------------------- shared bits

function isOk(o: Outcome): boolean {
  return o.status >= 200 && o.status <= 299;
}

function servedLatencies(outcomes: readonly Outcome[]): Float64Array {
  return Float64Array.from(outcomes.filter(isOk).map((o) => o.latencyMs)).sort();
}

/** e.g. `429: 40 (40 with retry-after), 503: 2`; `-` when none. */
function errorsByStatus(outcomes: readonly Outcome[]): { text: string; byStatus: Record<string, number>; with429RetryAfter: number } {
  const byStatus = new Map<number, number>();
  let with429RetryAfter = 0;
  for (const o of outcomes) {
    if (isOk(o)) continue;
    byStatus.set(o.status, (byStatus.get(o.status) ?? 0) + 1);
    if (o.status === 429 && o.retryAfter) with429RetryAfter++;
  }
  const parts = [...byStatus.entries()].sort((a, b) => a[0] - b[0]).map(([status, n]) => {
    const name = status === 0 ? "network/timeout" : String(status);
    return status === 429 ? `429: ${n} (${with429RetryAfter} with retry-after)` : `${name}: ${n}`;
  });
  return { text: parts.length === 0 ? "-" : parts.join(", "), byStatus: Object.fromEntries([...byStatus].map(([s, n]) => [String(s), n])), with429RetryAfter };
}

function firstFailure(outcomes: readonly Outcome[]): string | null {
  return outcomes.find((o) => o.failure !== null)?.failure ?? null;
}

function passMark(pass: boolean): string {
  return pass ? "PASS" : "MISS";
}

function keyStats(mock: MockProvider, secrets: readonly string[]): MockKeyStats[] {
  return secrets.map((s) => mock.stats(s));
}

function yamlConfig(providers: { id: string; port: number; keys: { id: string; secret: string; limits?: string }[] }[], routeExtra: string): string {
  return [
    "providers:",
    ...providers.map((p) => `  ${p.id}: { kind: openai, base_url: http://127.0.0.1:${p.port}/v1 }`),
    "pools:",
    ...providers.flatMap((p) => [
      `  ${p.id}:`,
      `    provider: ${p.id}`,
      "    keys:",
      ...p.keys.map((k) => `      - { id: ${k.id}, secret: ${k.secret}${k.limits !== undefined ? `, limits: ${k.limits}` : ""} }`),
    ]),
    "routes:",
    `  ${MODEL}:`,
    `    targets: [ ${providers.map((p) => `{ pool: ${p.id}, model: ${MODEL} }`).join(", ")} ]`,
    ...(routeExtra === "" ? [] : [`    ${routeExtra}`]),
    "tenants:",
    `  bench: { virtual_keys: [ ${VIRTUAL_KEY} ] }`,
    "",
  ].join("\n");
}

// ---------------------------------------------------------------- exhaustion

interface ExhaustionRow {
  variant: string;
  loadPct: number;
  offeredRps: number;
  offered: number;
  admitted: number;
  servedInWindow: number;
  successPct: number;
  goodputRps: number;
  goodputPctOfCapacity: number;
  clientErrors: string;
  errorsByStatus: Record<string, number>;
  client429: number;
  client429WithRetryAfter: number;
  upstreamRequests: number;
  upstream429: number;
  /** Sum over keys of max(0, 429s of that key - 1). */
  upstream429BeyondFirstPerKey: number;
  p50Ms: number;
  p99Ms: number;
  target: string;
  pass: boolean;
  firstError: string | null;
}

async function exhaustionVariant(
  ctx: ResilienceContext,
  variant: { label: string; declared: boolean; silent: boolean; loads: readonly number[] },
): Promise<ExhaustionRow[]> {
  const secrets = Array.from({ length: EX_KEYS }, (_, i) => `bench-ex-key-${i + 1}`);
  const limits = [{ requests: EX_REQUESTS_PER_WINDOW, perMs: EX_WINDOW_MS }];
  const mock = await startMockProvider({ keys: secrets.map((secret) => ({ secret, limits, silentLimits: variant.silent })), latencyMs: 0 });
  let keymesh: KeymeshHandle | null = null;
  try {
    const perWindow = `{ requests: ${EX_REQUESTS_PER_WINDOW}, per: ${EX_WINDOW_MS / 1000}s }`;
    const config = yamlConfig(
      [{ id: "mock", port: mock.port, keys: secrets.map((secret, i) => ({ id: `k${i + 1}`, secret, ...(variant.declared ? { limits: perWindow } : {}) })) }],
      `timeout: ${EX_ROUTE_TIMEOUT}\n    max_wait: ${EX_MAX_WAIT}`,
    );
    keymesh = await ctx.startKeymesh(`keymesh-exhaustion-${variant.declared ? "declared" : "learned"}`, config);
    const rows: ExhaustionRow[] = [];
    for (const loadPct of variant.loads) {
      // every window (mock's and keymesh's) empty before the run starts
      await sleep(EX_WINDOW_MS + 500);
      mock.resetStats();
      const offeredRps = (EX_CAPACITY_RPS * loadPct) / 100;
      const durationMs = EX_WINDOWS_PER_RUN * EX_WINDOW_MS;
      ctx.log(`exhaustion (${variant.label}): ${offeredRps} req/s for ${durationMs / 1000} s`);
      const { outcomes, startMs } = await ctx.guard(openLoop(keymesh.origin, offeredRps, durationMs));
      const perKey = keyStats(mock, secrets);
      const admitted = outcomes.filter(isOk).length;
      // goodput: answers served within the offered window, whose capacity is exactly windows x keys x N
      // (requests still waiting or retrying after it would otherwise borrow from the next window)
      const servedInWindow = outcomes.filter((o) => isOk(o) && o.endMs - startMs <= durationMs).length;
      const latencies = servedLatencies(outcomes);
      const errors = errorsByStatus(outcomes);
      const upstream429 = perKey.reduce((n, s) => n + s.rateLimited, 0);
      const beyondFirst = perKey.reduce((n, s) => n + Math.max(0, s.rateLimited - 1), 0);
      const goodputRps = (servedInWindow * 1000) / durationMs;
      const goodputPct = (100 * goodputRps) / EX_CAPACITY_RPS;
      const successPct = outcomes.length === 0 ? NaN : (100 * admitted) / outcomes.length;
      const under = loadPct <= 100;
      const pass = under ? admitted === outcomes.length && upstream429 === 0 : goodputPct >= 95 && beyondFirst === 0;
      rows.push({
        variant: variant.label, loadPct, offeredRps, offered: outcomes.length, admitted, servedInWindow, successPct, goodputRps,
        goodputPctOfCapacity: goodputPct, clientErrors: errors.text, errorsByStatus: errors.byStatus,
        client429: errors.byStatus["429"] ?? 0, client429WithRetryAfter: errors.with429RetryAfter,
        upstreamRequests: perKey.reduce((n, s) => n + s.requests, 0), upstream429, upstream429BeyondFirstPerKey: beyondFirst,
        p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99),
        target: under ? "100% success, 0 upstream 429" : "goodput >= 95%, no upstream 429 after the first per key",
        pass, firstError: firstFailure(outcomes),
      });
    }
    return rows;
  } finally {
    await keymesh?.stop();
    await mock.close();
  }
}

export async function runExhaustion(ctx: ResilienceContext): Promise<ResilienceResult> {
  const rows = [
    // the limiter's own view: limits declared, the mock says nothing until it refuses
    ...(await exhaustionVariant(ctx, { label: "declared, silent mock", declared: true, silent: true, loads: [75, 150] })),
    // learning: nothing declared, the mock sends x-ratelimit-* on every answer. At 75% each key
    // gets 15 of its 20 per window whatever keymesh knows, so only the overload run says anything.
    ...(await exhaustionVariant(ctx, { label: "undeclared, mock headers", declared: false, silent: false, loads: [150] })),
  ];
  const table = renderTable(
    ["limits", "load", "offered", "admitted (2xx)", "goodput/s", "of capacity", "client errors", "upstream 429 (beyond 1st/key)", "p50 ms", "p99 ms", "target"],
    rows.map((r) => [
      r.variant, `${r.loadPct}%`, `${r.offered} (${r.offeredRps}/s)`, `${r.admitted} (${fmtPct(r.successPct)})`,
      r.goodputRps.toFixed(1), fmtPct(r.goodputPctOfCapacity), r.clientErrors,
      `${r.upstream429} (${r.upstream429BeyondFirstPerKey})`, fmtMs(r.p50Ms), fmtMs(r.p99Ms), passMark(r.pass),
    ]),
  );
  const notes = rows.filter((r) => r.firstError !== null).map((r) => `first error (${r.variant}, ${r.loadPct}%): ${r.firstError}`);
  const text = [
    `== exhaustion: ${EX_KEYS} keys x ${EX_REQUESTS_PER_WINDOW} requests per ${EX_WINDOW_MS / 1000} s (capacity ${EX_CAPACITY_RPS}/s), open loop, ${EX_WINDOWS_PER_RUN} windows per run, route timeout ${EX_ROUTE_TIMEOUT}, max_wait ${EX_MAX_WAIT}`,
    "goodput counts 2xx that ended within the offered window; admitted counts every 2xx, also those served after it",
    table,
    "targets: 75% -> 100% success and 0 upstream 429s; 150% -> goodput >= 95% of capacity and no upstream 429 after the first per key",
    ...notes,
  ].join("\n");
  const checks = rows.map((r) =>
    r.loadPct <= 100
      ? { label: `exhaustion ${r.loadPct}% (${r.variant})`, measured: `${fmtPct(r.successPct)} ok, ${r.upstream429} upstream 429`, target: "100% ok, 0 upstream 429", pass: r.pass }
      : { label: `exhaustion ${r.loadPct}% (${r.variant})`, measured: `goodput ${fmtPct(r.goodputPctOfCapacity)}, ${r.upstream429BeyondFirstPerKey} extra 429`, target: ">= 95%, 0 after 1st/key", pass: r.pass },
  );
  return { name: "exhaustion", text, checks, json: { capacityRps: EX_CAPACITY_RPS, windowMs: EX_WINDOW_MS, rows } };
}

// ---------------------------------------------------------------- failure-mix

interface FailureMixRow {
  label: string;
  requests: number;
  ok: number;
  successPct: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  attemptsMean: number;
  attemptsMax: number;
  /** Share of served requests by attempts: 1, 2, 3+. */
  attemptsShare: [number, number, number];
  clientErrors: string;
  upstreamA: MockKeyStats;
  upstreamB: MockKeyStats;
  revokedKey401: number;
  firstError: string | null;
}

function failureMixRow(label: string, outcomes: readonly Outcome[], measuredMs: number, a: MockProvider, b: MockProvider, revoked: string): FailureMixRow {
  const served = outcomes.filter(isOk);
  const attempts = served.map((o) => o.attempts).filter((n) => Number.isFinite(n));
  const share = (pick: (n: number) => boolean): number => (attempts.length === 0 ? NaN : (100 * attempts.filter(pick).length) / attempts.length);
  const latencies = servedLatencies(outcomes);
  return {
    label,
    requests: outcomes.length,
    ok: served.length,
    successPct: outcomes.length === 0 ? NaN : (100 * served.length) / outcomes.length,
    requestsPerSecond: (served.length * 1000) / measuredMs,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    attemptsMean: attempts.length === 0 ? NaN : attempts.reduce((s, n) => s + n, 0) / attempts.length,
    attemptsMax: attempts.reduce((m, n) => Math.max(m, n), 0),
    attemptsShare: [share((n) => n === 1), share((n) => n === 2), share((n) => n >= 3)],
    clientErrors: errorsByStatus(outcomes).text,
    upstreamA: a.stats(),
    upstreamB: b.stats(),
    revokedKey401: a.stats(revoked).unauthorized,
    firstError: firstFailure(outcomes),
  };
}

export async function runFailureMix(ctx: ResilienceContext): Promise<ResilienceResult> {
  const aKeys = ["bench-fa-key-1", "bench-fa-key-2"];
  const bKeys = ["bench-fb-key-1", "bench-fb-key-2"];
  const revoked = aKeys[1]!;
  const a = await startMockProvider({ keys: aKeys.map((secret) => ({ secret })), latencyMs: FM_LATENCY_MS });
  const b = await startMockProvider({ keys: bKeys.map((secret) => ({ secret })), latencyMs: FM_LATENCY_MS });
  let keymesh: KeymeshHandle | null = null;
  const rows: FailureMixRow[] = [];
  try {
    const config = yamlConfig(
      [
        { id: "pa", port: a.port, keys: aKeys.map((secret, i) => ({ id: `a${i + 1}`, secret })) },
        { id: "pb", port: b.port, keys: bKeys.map((secret, i) => ({ id: `b${i + 1}`, secret })) },
      ],
      "",
    );
    keymesh = await ctx.startKeymesh("keymesh-failure-mix", config);
    const durationMs = FM_SECONDS * 1000;
    // one uncounted second so connections and code paths are warm for both runs
    await ctx.guard(closedLoop(keymesh.origin, FM_CONCURRENCY, 1000));

    // baseline first: a revocation cannot be undone on the mock
    a.resetStats();
    b.resetStats();
    ctx.log(`failure-mix: no failures, c=${FM_CONCURRENCY} for ${FM_SECONDS} s`);
    const base = await ctx.guard(closedLoop(keymesh.origin, FM_CONCURRENCY, durationMs));
    rows.push(failureMixRow("no failures", base.outcomes, base.measuredMs, a, b, revoked));

    a.setFailures({ errorRate: FM_ERROR_RATE });
    a.revokeKey(revoked);
    a.resetStats();
    b.resetStats();
    ctx.log(`failure-mix: A answers 503 to ${FM_ERROR_RATE * 100}% and key ${revoked} revoked, c=${FM_CONCURRENCY} for ${FM_SECONDS} s`);
    const mixed = await ctx.guard(closedLoop(keymesh.origin, FM_CONCURRENCY, durationMs));
    rows.push(failureMixRow(`A: ${FM_ERROR_RATE * 100}% 503 + 1 key revoked`, mixed.outcomes, mixed.measuredMs, a, b, revoked));
  } finally {
    await keymesh?.stop();
    await Promise.all([a.close(), b.close()]);
  }

  const table = renderTable(
    ["run", "requests", "success", "req/s", "p50 ms", "p99 ms", "attempts mean/max", "1 / 2 / 3+ attempts", "client errors", "upstream A: req/503/401", "upstream B: req"],
    rows.map((r) => [
      r.label, String(r.requests), fmtPct(r.successPct), r.requestsPerSecond.toFixed(0), fmtMs(r.p50Ms), fmtMs(r.p99Ms),
      `${Number.isFinite(r.attemptsMean) ? r.attemptsMean.toFixed(3) : "-"}/${r.attemptsMax}`,
      r.attemptsShare.map((p) => fmtPct(p)).join(" / "), r.clientErrors,
      `${r.upstreamA.requests}/${r.upstreamA.failed}/${r.upstreamA.unauthorized}`, String(r.upstreamB.requests),
    ]),
  );
  const mixed = rows[1]!;
  const text = [
    `== failure-mix: route [A (2 keys), B (2 keys)], closed loop c=${FM_CONCURRENCY}, ${FM_SECONDS} s per run, mock latency ${FM_LATENCY_MS} ms`,
    table,
    `revoked key: ${mixed.revokedKey401} upstream 401s (once parked it gets no calls: at most about one per request in flight, ${FM_CONCURRENCY})`,
    ...rows.filter((r) => r.firstError !== null).map((r) => `first error (${r.label}): ${r.firstError}`),
  ].join("\n");
  const checks: Check[] = [
    check("failure-mix success with failures", mixed.successPct, "100%", (v) => v === 100, fmtPct),
    check("failure-mix revoked key 401s", mixed.revokedKey401, `<= ${FM_CONCURRENCY} (parked)`, (v) => v <= FM_CONCURRENCY, String),
  ];
  return { name: "failure-mix", text, checks, json: { concurrency: FM_CONCURRENCY, seconds: FM_SECONDS, errorRate: FM_ERROR_RATE, rows } };
}

export async function runResilience(name: ResilienceName, ctx: ResilienceContext): Promise<ResilienceResult> {
  return name === "exhaustion" ? runExhaustion(ctx) : runFailureMix(ctx);
}
