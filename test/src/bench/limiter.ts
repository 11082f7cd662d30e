/**
 * The `limiter` scenario: what one decision of the limiter service costs when
 * a router calls it over gRPC. It starts the real services as `keymesh serve`
 * processes (control with a config file, then one limiter per store, memory and
 * Redis) and drives each limiter from a forked gRPC load client
 * (limiter-loadgen.ts), so neither the client nor the orchestrator shares the
 * limiter's event loop. Limits are far above what the runs can spend, so every
 * Acquire is granted: the numbers are the decision, not denials; one last run
 * on a small pool shows the cost when most answers are denials.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Redis from "ioredis";
import { redisForTests, startPrivateNats, type ExternalServer } from "@keymesh/testing";
import { LoadClient } from "./load-client";
import type { LimiterLoadResult, LimiterLoadSpec, LimiterRpc } from "./limiter-loadgen";
import { cpuDeltaMs, readTreeRssBytes, snapshotTreeCpu, type CpuSnapshot } from "./proc-stats";
import { fmtMB, fmtMs, fmtRate, info, percentile, renderTable, type Check } from "./report";
import type { ResilienceContext } from "./resilience";

export const LIMITER_SCENARIO = {
  name: "limiter",
  title: "limiter service over gRPC: Acquire, AcquireBatch and GrantLeases, memory and Redis stores",
} as const;

/** What run.ts lends this scenario: as for the resilience ones, plus any service started from the built checkout. */
export interface LimiterBenchContext extends Pick<ResilienceContext, "guard" | "log"> {
  /** `services/cli/bin/keymesh.js` of the checkout under test. */
  keymeshBin: string;
  /** Scratch dir, removed by the bench at the end. */
  workDir(): string;
  /** Starts `node ...args` and waits for `ready` on its output; a later death fails the bench. */
  startService(name: string, args: readonly string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<ServiceHandle>;
}

export interface ServiceHandle {
  pid: number;
  /** The match of its ready pattern. */
  readyLine: RegExpMatchArray;
  stop(): Promise<void>;
}

export interface LimiterBenchResult {
  text: string;
  checks: Check[];
  json: unknown;
}

type Store = "memory" | "redis";

// Started on port 0, they say where they listen: a port picked ahead could be taken before it is bound.
const SERVING = (service: string): RegExp => new RegExp(`keymesh ${service} serving on (\\S+:\\d+)`);
const CONCURRENCY = 16;
const BATCH_SIZE = 32;
const WANTED_SLOTS = 64;
const HOLD_MS = 1_000;
const WARMUP_MS = 1_000;
const DURATION_MS = 5_000;
const MAX_SAMPLES = 4_000_000;
const KEYS_PER_POOL = 4;
/** The most one window may hold (the limiter's MAX_WINDOW_REQUESTS): far above what a run spends. */
const REQUESTS_PER_WINDOW = 1_000_000;
const WINDOW = "60s";
/** Acquire and AcquireBatch share one pool; leases get their own, so the slots they set aside never shrink the decide runs' headroom. */
const DECIDE_POOL = "decide";
const LEASE_POOL = "lease";
/**
 * A pool whose capacity (400/s) is below what c=16 reaches on a quiet
 * machine, so part of the answers are denials: the path that scans every key
 * and computes a retry-after.
 */
const TIGHT_POOL = "tight";
const TIGHT_REQUESTS_PER_WINDOW = 100;
const TIGHT_WINDOW = "1s";

const RUNS: readonly { rpc: LimiterRpc; label: string; poolId: string }[] = [
  { rpc: "acquire", label: "Acquire", poolId: DECIDE_POOL },
  { rpc: "acquire-batch", label: `AcquireBatch x${BATCH_SIZE}`, poolId: DECIDE_POOL },
  { rpc: "grant-leases", label: `GrantLeases (${WANTED_SLOTS} slots wanted, hold ${HOLD_MS / 1000} s)`, poolId: LEASE_POOL },
  { rpc: "acquire", label: `Acquire at the limit (${KEYS_PER_POOL} x ${TIGHT_REQUESTS_PER_WINDOW}/${TIGHT_WINDOW})`, poolId: TIGHT_POOL },
];

interface LimiterRow {
  store: Store;
  rpc: LimiterRpc;
  label: string;
  callsPerSecond: number;
  /** Acquire/AcquireBatch: requests decided per second; GrantLeases: slots granted per second. */
  decisionsPerSecond: number;
  grantedPct: number;
  leasesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  firstError: string | null;
  limiterCpuMsPerCall: number;
  limiterCpuMsPerDecision: number;
  limiterRssBytes: number;
}

function configYaml(): string {
  const pool = (poolId: string, requests: number, per: string): string[] => [
    `  ${poolId}:`,
    "    provider: unused",
    "    keys:",
    ...Array.from({ length: KEYS_PER_POOL }, (_, i) =>
      `      - { id: ${poolId}-${i + 1}, secret: bench-limiter-${poolId}-${i + 1}, limits: { requests: ${requests}, per: ${per} } }`),
  ];
  return [
    // the limiter never calls a provider; the config only has to be valid
    "providers:",
    "  unused: { kind: openai, base_url: http://127.0.0.1:9/v1 }",
    "pools:",
    ...pool(DECIDE_POOL, REQUESTS_PER_WINDOW, WINDOW),
    ...pool(LEASE_POOL, REQUESTS_PER_WINDOW, WINDOW),
    ...pool(TIGHT_POOL, TIGHT_REQUESTS_PER_WINDOW, TIGHT_WINDOW),
    "routes:",
    `  bench: { targets: [ { pool: ${DECIDE_POOL}, model: m }, { pool: ${LEASE_POOL}, model: m }, { pool: ${TIGHT_POOL}, model: m } ] }`,
    "tenants:",
    "  bench: { virtual_keys: [ sk-keymesh-limiter-bench ] }",
    "",
  ].join("\n");
}

async function measure(
  ctx: LimiterBenchContext,
  client: LoadClient<LimiterLoadSpec, LimiterLoadResult>,
  limiter: ServiceHandle & { address: string },
  store: Store,
  run: (typeof RUNS)[number],
): Promise<LimiterRow> {
  ctx.log(`limiter (${store}): ${run.label}, c=${CONCURRENCY} for ${DURATION_MS / 1000} s`);
  let startCpu: Promise<CpuSnapshot> | null = null;
  let endCpu: Promise<CpuSnapshot> | null = null;
  const result = await ctx.guard(client.run(
    {
      address: limiter.address, rpc: run.rpc, poolId: run.poolId, concurrency: CONCURRENCY, batchSize: BATCH_SIZE,
      wantedSlots: WANTED_SLOTS, holdMs: HOLD_MS, warmupMs: WARMUP_MS, durationMs: DURATION_MS, maxSamples: MAX_SAMPLES,
    },
    {
      onMeasureStart: () => (startCpu = snapshotTreeCpu(limiter.pid)),
      onMeasureEnd: () => (endCpu = snapshotTreeCpu(limiter.pid)),
    },
  ));
  const cpuMs = cpuDeltaMs(await (startCpu ?? snapshotTreeCpu(limiter.pid)), await (endCpu ?? snapshotTreeCpu(limiter.pid)));
  const latencies = result.latencyMs.sort();
  const seconds = result.measuredMs / 1000;
  const decided = result.granted + result.denied;
  const decisions = run.rpc === "grant-leases" ? result.slots : decided;
  // CPU is spent on failed calls too
  const callsServed = result.calls + result.errors;
  return {
    store, rpc: run.rpc, label: run.label,
    callsPerSecond: result.calls / seconds,
    decisionsPerSecond: decisions / seconds,
    grantedPct: decided === 0 ? NaN : (100 * result.granted) / decided,
    leasesPerSecond: result.leases / seconds,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    errors: result.errors,
    firstError: result.firstError,
    limiterCpuMsPerCall: callsServed === 0 ? NaN : cpuMs / callsServed,
    limiterCpuMsPerDecision: decisions === 0 ? NaN : cpuMs / decisions,
    limiterRssBytes: await readTreeRssBytes(limiter.pid),
  };
}

function fmtCpuMs(ms: number): string {
  // a decision costs tens of microseconds: two decimals would show 0.00
  return Number.isFinite(ms) ? ms.toFixed(4) : "-";
}

/** Removes the keys this run left under its Redis prefix (the Redis is shared: never a flush). */
async function deletePrefix(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url);
  try {
    for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 500 }) as AsyncIterable<string[]>) {
      if (keys.length > 0) await redis.del(...keys);
    }
  } finally {
    redis.disconnect();
  }
}

export async function runLimiterBench(ctx: LimiterBenchContext): Promise<LimiterBenchResult> {
  const configPath = join(ctx.workDir(), "limiter-bench.yaml");
  writeFileSync(configPath, configYaml());
  // a private NATS: on the shared server, another checkout's policy
  // announcements and usage events would reach these services
  const nats = await startPrivateNats();
  const redis: ExternalServer = await redisForTests();
  const prefix = `keymesh-bench-limiter-${randomBytes(6).toString("hex")}`;
  // the memory limiter must not pick up a REDIS_URL from the caller's environment
  const { REDIS_URL: _redisUrl, KEYMESH_REDIS_PREFIX: _redisPrefix, ...inherited } = process.env;
  const baseEnv: NodeJS.ProcessEnv = {
    ...inherited,
    NATS_URL: nats.url,
    KEYMESH_MASTER_KEY: randomBytes(32).toString("base64"),
    KEYMESH_LOG_LEVEL: "warn",
  };
  const services: ServiceHandle[] = [];
  const client = new LoadClient<LimiterLoadSpec, LimiterLoadResult>(join(__dirname, "limiter-loadgen.js"));
  const rows: LimiterRow[] = [];
  try {
    ctx.log(`limiter: starting control (NATS ${nats.url})`);
    const control = await ctx.startService(
      "limiter-bench-control", [ctx.keymeshBin, "serve", "control", "--port", "0", "--config", configPath], baseEnv, SERVING("control"),
    );
    services.push(control);
    baseEnv.KEYMESH_CONTROL_ADDR = control.readyLine[1];
    for (const store of ["memory", "redis"] as const) {
      const env = store === "redis" ? { ...baseEnv, REDIS_URL: redis.url, KEYMESH_REDIS_PREFIX: prefix } : baseEnv;
      ctx.log(`limiter: starting the ${store}-store limiter${store === "redis" ? ` (${redis.url}, prefix ${prefix})` : ""}`);
      // "serving on" is printed once the first policy is applied: the pools exist
      const handle = await ctx.startService(`limiter-bench-${store}`, [ctx.keymeshBin, "serve", "limiter", "--port", "0"], env, SERVING("limiter"));
      services.push(handle);
      const limiter = { ...handle, address: handle.readyLine[1]! };
      ctx.log(`limiter: the ${store}-store limiter serves on ${limiter.address}`);
      try {
        for (const run of RUNS) rows.push(await measure(ctx, client, limiter, store, run));
      } finally {
        // stopped before the next store's runs, so its idle timers add no noise
        await handle.stop();
      }
    }
  } finally {
    client.kill();
    for (const service of [...services].reverse()) await service.stop();
    await deletePrefix(redis.url, prefix).catch((error: unknown) => ctx.log(`limiter: could not remove Redis keys ${prefix}:*: ${String(error)}`));
    await redis.stop();
    await nats.stop();
  }
  return report(rows);
}

function report(rows: readonly LimiterRow[]): LimiterBenchResult {
  const table = renderTable(
    ["store", "rpc", "calls/s", "decisions/s", "granted", "leases/s", "p50 ms", "p99 ms", "errors", "limiter cpu ms/call", "limiter cpu ms/decision", "limiter RSS"],
    rows.map((r) => [
      r.store, r.label, fmtRate(r.callsPerSecond), fmtRate(r.decisionsPerSecond),
      Number.isFinite(r.grantedPct) ? `${r.grantedPct.toFixed(1)}%` : "-",
      r.rpc === "grant-leases" ? fmtRate(r.leasesPerSecond) : "-",
      fmtMs(r.p50Ms), fmtMs(r.p99Ms), String(r.errors), fmtCpuMs(r.limiterCpuMsPerCall), fmtCpuMs(r.limiterCpuMsPerDecision), fmtMB(r.limiterRssBytes),
    ]),
  );
  const text = [
    `== limiter: ${LIMITER_SCENARIO.title}`,
    `closed loop c=${CONCURRENCY}, ${WARMUP_MS / 1000} s warm-up + ${DURATION_MS / 1000} s per run; ${KEYS_PER_POOL} keys x ${REQUESTS_PER_WINDOW} requests per ${WINDOW} per pool, so Acquire is granted (except "at the limit": ${KEYS_PER_POOL} x ${TIGHT_REQUESTS_PER_WINDOW} per ${TIGHT_WINDOW}, below what c=${CONCURRENCY} reaches on a quiet machine)`,
    "decisions: requests decided (Acquire, AcquireBatch) or slots granted (GrantLeases, each one request a router admits without a call); RSS read after each run",
    table,
    ...rows.filter((r) => r.firstError !== null).map((r) => `first error (${r.store}, ${r.label}): ${r.firstError}`),
  ].join("\n");
  const checks = rows.map((r) => {
    const rate = r.rpc === "acquire"
      ? `${fmtRate(r.callsPerSecond)} calls/s (${r.grantedPct.toFixed(0)}% granted)`
      : r.rpc === "acquire-batch" ? `${fmtRate(r.decisionsPerSecond)} decisions/s` : `${fmtRate(r.decisionsPerSecond)} slots/s`;
    return info(`limiter ${r.label} (${r.store})`, `${rate}, p99 ${fmtMs(r.p99Ms)} ms, ${fmtCpuMs(r.limiterCpuMsPerDecision)} cpu ms/decision`);
  });
  return { text, checks, json: { concurrency: CONCURRENCY, batchSize: BATCH_SIZE, wantedSlots: WANTED_SLOTS, holdMs: HOLD_MS, durationMs: DURATION_MS, rows } };
}
