/**
 * `npm run bench`: starts the mock provider and keymesh, drives both from a
 * separate load process, and prints throughput, latency, CPU and memory of
 * keymesh against calling the mock directly. Prints numbers, never asserts
 * them: the exit code says only whether the harness itself worked.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { Client } from "undici";
import { LoadClient, type RunHooks } from "./load-client";
import type { LoadResult, LoadSpec } from "./loadgen";
import {
  clockTicks, cpuDeltaMs, listProcessTree, RssSampler, snapshotTreeCpu, type CpuSnapshot,
} from "./proc-stats";
import {
  check, compareTargets, concatSamples, fmtMB, fmtMs, fmtPct, fmtSignedMs, renderMemory, renderScenario,
  renderSummary, renderTable, summarizeMemory, summarizeTarget, tailLine,
  type Check, type MemoryReport, type ScenarioReport, type Target, type TargetTotals,
} from "./report";
import { LIMITER_SCENARIO, runLimiterBench, type ServiceHandle } from "./limiter";
import { RESILIENCE_SCENARIOS, runResilience, type KeymeshHandle, type ResilienceResult } from "./resilience";

const MOCK_READY = /mock provider listening on/;
const KEYMESH_READY = /keymesh is up/;
const MOCK_READY_TIMEOUT_MS = 30_000;
const KEYMESH_READY_TIMEOUT_MS = 90_000;
const STOP_GRACE_MS = 5_000;
const OUTPUT_LINES_KEPT = 40;
const VIRTUAL_KEY = "sk-keymesh-bench";
const PROVIDER_KEYS = ["bench-key-1", "bench-key-2", "bench-key-3"];
const MODEL = "gpt-4o-mini";
const CHAT_PATH = "/v1/chat/completions";
const SAMPLES_PER_SEGMENT = 4_000_000;
const OPEN_LOOP_CONNECTIONS = 16;
const INITIAL_WARMUP_MS = 2_000;
const CALIBRATION_MS = 3_000;
const RSS_GOAL_BYTES = 300e6;
const SOAK_GROWTH_GOAL_PCT = 10;
/** Soak growth compares mean RSS over windows this long (shorter soaks: a quarter of the run). */
const SOAK_WINDOW_MS = 60_000;

// ---------------------------------------------------------------- options

interface BenchOptions {
  root: string;
  seconds: number;
  warmupSeconds: number;
  rounds: number;
  streamChunkDelayMs: number;
  rateRps: number | null;
  soakSeconds: number | null;
  only: ReadonlySet<string> | null;
  jsonPath: string | null;
  verbose: boolean;
  /** BENCH_TAILS=1: log each scenario's latency quantiles and histogram per target. */
  tails: boolean;
  /** BENCH_PROXY=bare: the bare pass-through proxy (bare-proxy.ts) stands in for keymesh, to measure the floor. */
  bareProxy: boolean;
}

class HarnessError extends Error {}

function bareProxyFromEnv(): boolean {
  const raw = process.env["BENCH_PROXY"];
  if (raw === undefined || raw === "" || raw === "keymesh") return false;
  if (raw === "bare") return true;
  throw new HarnessError(`BENCH_PROXY=${raw}: expected "keymesh" (the default) or "bare"`);
}

function positiveNumber(name: string, fallback: number | null): number | null {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new HarnessError(`${name}=${raw}: expected a positive number`);
  return value;
}

function nonNegativeNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new HarnessError(`${name}=${raw}: expected a number >= 0`);
  return value;
}

function readOptions(argv: readonly string[]): BenchOptions {
  let jsonPath: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--json") {
      const next = argv[++i];
      if (next === undefined || next.startsWith("--")) throw new HarnessError("--json needs a file path");
      jsonPath = resolve(next);
    } else if (arg.startsWith("--json=")) {
      jsonPath = resolve(arg.slice("--json=".length));
    } else {
      throw new HarnessError(`unknown argument ${arg} (known: --json <file>)`);
    }
  }
  const onlyRaw = process.env["BENCH_ONLY"];
  const only = onlyRaw ? new Set(onlyRaw.split(",").map((s) => s.trim()).filter((s) => s !== "")) : null;
  if (only !== null) {
    const known = [...SCENARIOS, ...RESILIENCE_SCENARIOS, LIMITER_SCENARIO].map((s) => s.name);
    const unknown = [...only].filter((name) => !known.includes(name));
    if (unknown.length > 0) {
      throw new HarnessError(`BENCH_ONLY: unknown scenario ${unknown.join(", ")} (known: ${known.join(", ")})`);
    }
  }
  const rounds = positiveNumber("BENCH_ROUNDS", 2)!;
  if (!Number.isInteger(rounds)) throw new HarnessError(`BENCH_ROUNDS=${rounds}: expected a whole number`);
  return {
    // BENCH_ROOT lets the harness drive another checkout (or stand-ins) with the same layout
    root: resolve(process.env["BENCH_ROOT"] ?? join(__dirname, "..", "..", "..")),
    seconds: positiveNumber("BENCH_SECONDS", 8)!,
    warmupSeconds: positiveNumber("BENCH_WARMUP_SECONDS", 1)!,
    rounds,
    streamChunkDelayMs: nonNegativeNumber("BENCH_STREAM_CHUNK_DELAY_MS", 0),
    rateRps: positiveNumber("BENCH_RATE", null),
    soakSeconds: positiveNumber("BENCH_SOAK_SECONDS", null),
    only,
    jsonPath,
    verbose: process.env["BENCH_VERBOSE"] === "1",
    tails: process.env["BENCH_TAILS"] === "1",
    bareProxy: bareProxyFromEnv(),
  };
}

// ---------------------------------------------------------------- scenarios

interface Scenario {
  name: string;
  title: string;
  stream: boolean;
  mode: "closed" | "open";
  concurrency: number;
}

const SCENARIOS: readonly Scenario[] = [
  { name: "plain-c16", title: "chat completions, closed loop, concurrency 16", stream: false, mode: "closed", concurrency: 16 },
  { name: "plain-c64", title: "chat completions, closed loop, concurrency 64", stream: false, mode: "closed", concurrency: 64 },
  { name: "stream-c16", title: "streamed chat completions, closed loop, concurrency 16", stream: true, mode: "closed", concurrency: 16 },
  { name: "light-plain", title: "chat completions, open loop at a light fixed rate", stream: false, mode: "open", concurrency: 0 },
  { name: "light-stream", title: "streamed chat completions, open loop at a light fixed rate", stream: true, mode: "open", concurrency: 0 },
];

function requestBody(stream: boolean): string {
  return JSON.stringify({
    model: MODEL,
    messages: [{ role: "user", content: "Say hello in five words." }],
    max_tokens: 32,
    ...(stream ? { stream: true } : {}),
  });
}

// ---------------------------------------------------------------- child processes

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}

/** A service the bench started: its own process group, output kept for error reports. */
class ManagedChild {
  readonly process: ChildProcess;
  readonly exited: Promise<number | string>;
  private readonly lines: string[] = [];
  private readyWatch: { pattern: RegExp; resolve: (match: RegExpMatchArray) => void } | null = null;
  private stopping = false;
  private stopped = false;
  private hasExited = false;

  constructor(
    readonly name: string,
    args: readonly string[],
    env: NodeJS.ProcessEnv,
    cwd: string,
    private readonly verbose: boolean,
  ) {
    // detached: its own process group, so stop() reaches everything it spawns
    this.process = spawn(process.execPath, args, { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    this.exited = new Promise((resolveExit) => {
      this.process.once("exit", (code, signal) => {
        this.hasExited = true;
        resolveExit(signal ?? code ?? "unknown");
      });
      this.process.once("error", (error) => {
        this.hasExited = true;
        this.keep(`spawn failed: ${error.message}`);
        resolveExit("spawn-error");
      });
    });
    for (const stream of [this.process.stdout, this.process.stderr]) {
      if (stream !== null) createInterface({ input: stream }).on("line", (line) => this.keep(line));
    }
  }

  get pid(): number {
    if (this.process.pid === undefined) throw new HarnessError(`${this.name} has no pid (spawn failed)`);
    return this.process.pid;
  }

  get running(): boolean {
    return !this.hasExited;
  }

  get stoppedOnPurpose(): boolean {
    return this.stopping;
  }

  recentOutput(): string {
    return this.lines.length === 0 ? "(no output)" : this.lines.map((l) => `  | ${l}`).join("\n");
  }

  /** Resolves with the match of the first output line matching `pattern` (e.g. the address it bound). */
  async waitReady(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    for (const line of this.lines) {
      const match = line.match(pattern);
      if (match) return match;
    }
    const ready = new Promise<RegExpMatchArray>((resolveReady) => {
      this.readyWatch = { pattern, resolve: resolveReady };
    });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((done) => {
      timer = setTimeout(() => done("timeout"), timeoutMs);
    });
    const outcome = await Promise.race([ready, this.exited.then(() => "exited" as const), timedOut]);
    clearTimeout(timer);
    this.readyWatch = null;
    if (outcome === "exited") {
      throw new HarnessError(`${this.name} exited (${String(await this.exited)}) before it was ready; last output:\n${this.recentOutput()}`);
    }
    if (outcome === "timeout") {
      throw new HarnessError(`${this.name} not ready after ${timeoutMs} ms (waiting for ${pattern}); last output:\n${this.recentOutput()}`);
    }
    return outcome;
  }

  /** SIGTERM to the group, then SIGKILL to whatever of the tree is left after a grace period. */
  async stop(): Promise<void> {
    if (this.stopping || this.process.pid === undefined) return;
    this.stopping = true;
    const pid = this.process.pid;
    // the group outlives its leader: children of a crashed service are still in it
    const tree = await snapshotTreeCpu(pid);
    signalGroup(pid, "SIGTERM");
    await Promise.race([this.exited, sleep(STOP_GRACE_MS)]);
    signalGroup(pid, "SIGKILL");
    // descendants that left the group (setsid) are killed by pid, if still the same process
    const leftovers = await snapshotTreeCpu(pid).catch(() => new Map<string, number>());
    for (const key of tree.keys()) {
      const childPid = Number(key.split(":")[0]);
      const now = await snapshotTreeCpu(childPid);
      if (now.has(key) || leftovers.has(key)) signalPid(childPid, "SIGKILL");
    }
    await Promise.race([this.exited, sleep(STOP_GRACE_MS)]);
    this.stopped = true;
  }

  /** Last resort from the synchronous `exit` handler. */
  killNow(): void {
    if (!this.stopped && this.process.pid !== undefined) signalGroup(this.process.pid, "SIGKILL");
  }

  private keep(line: string): void {
    this.lines.push(line);
    if (this.lines.length > OUTPUT_LINES_KEPT) this.lines.shift();
    if (this.verbose) process.stderr.write(`[${this.name}] ${line}\n`);
    const match = this.readyWatch === null ? null : line.match(this.readyWatch.pattern);
    if (match) this.readyWatch?.resolve(match);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  await once(server, "close");
  if (address === null || typeof address === "string") throw new HarnessError("could not get a free port");
  return address.port;
}

// ---------------------------------------------------------------- the bench

interface Endpoint {
  origin: string;
  authorization: string;
}

interface SegmentTiming {
  warmupMs: number;
  durationMs: number;
  /** Open loop only. */
  rateRps?: number;
  progressEveryMs?: number;
}

interface CpuMarks {
  keymesh: CpuSnapshot;
  mock: CpuSnapshot;
  client: CpuSnapshot;
}

class Bench {
  private mock: ManagedChild | null = null;
  private keymesh: ManagedChild | null = null;
  private client: LoadClient<LoadSpec, LoadResult> | null = null;
  private sampler: RssSampler | null = null;
  private workDir: string | null = null;
  private endpoints: Record<Target, Endpoint> | null = null;
  private idleRssBytes = NaN;
  private loadStartWallMs = Infinity;
  private failFatal: ((error: Error) => void) | null = null;
  private readonly fatal: Promise<never>;
  private readonly reports: ScenarioReport[] = [];
  private lightRateRps = NaN;
  private lightRateSource = "";
  /** keymesh instances of the resilience scenarios, each with its own config. */
  private readonly extras = new Set<ManagedChild>();

  constructor(private readonly options: BenchOptions) {
    this.fatal = new Promise<never>((_, reject) => {
      this.failFatal = reject;
    });
    this.fatal.catch(() => undefined);
  }

  async start(): Promise<void> {
    const { root, verbose } = this.options;
    const mockMain = join(root, "services/mock-provider/dist/main.js");
    const keymeshBin = this.options.bareProxy ? join(__dirname, "bare-proxy.js") : join(root, "services/cli/bin/keymesh.js");
    for (const script of [mockMain, keymeshBin]) {
      if (!existsSync(script)) throw new HarnessError(`${script} not found: build first (npm run build), or set BENCH_ROOT`);
    }
    const [mockPort, keymeshPort] = [await freePort(), await freePort()];
    const workDir = this.ensureWorkDir();

    const mockOptions = { keys: PROVIDER_KEYS.map((secret) => ({ secret })), latencyMs: 0, streamChunks: 8, streamChunkDelayMs: this.options.streamChunkDelayMs };
    log(`starting mock provider on 127.0.0.1:${mockPort}`);
    this.mock = new ManagedChild(
      "mock",
      [mockMain, "--port", String(mockPort), "--options-json", JSON.stringify(mockOptions)],
      process.env, workDir, verbose,
    );
    await this.mock.waitReady(MOCK_READY, MOCK_READY_TIMEOUT_MS);

    const configPath = join(workDir, "keymesh.yaml");
    writeFileSync(configPath, keymeshConfig(mockPort));
    log(`starting ${this.options.bareProxy ? "the bare proxy (BENCH_PROXY=bare) in keymesh's place" : "keymesh"} on 127.0.0.1:${keymeshPort}`);
    this.keymesh = new ManagedChild(
      "keymesh",
      [keymeshBin, "up", "--config", configPath],
      // cwd in the scratch dir: whatever keymesh writes next to itself is removed with it
      { ...process.env, KEYMESH_HTTP_PORT: String(keymeshPort), KEYMESH_GRPC_PORT: String(await freePort()) }, workDir, verbose,
    );
    await this.keymesh.waitReady(KEYMESH_READY, KEYMESH_READY_TIMEOUT_MS);

    for (const child of [this.mock, this.keymesh]) {
      void child.exited.then((how) => {
        if (!child.stoppedOnPurpose) {
          this.failFatal?.(new HarnessError(`${child.name} exited unexpectedly (${String(how)}); last output:\n${child.recentOutput()}`));
        }
      });
    }

    this.endpoints = {
      direct: { origin: `http://127.0.0.1:${mockPort}`, authorization: `Bearer ${PROVIDER_KEYS[0]}` },
      keymesh: { origin: `http://127.0.0.1:${keymeshPort}`, authorization: `Bearer ${VIRTUAL_KEY}` },
    };
    this.sampler = new RssSampler(this.keymesh.pid);
    this.sampler.start();
    const idle = await this.sampler.sample();
    this.idleRssBytes = idle?.bytes ?? NaN;
    const treeSize = (await listProcessTree(this.keymesh.pid)).length;
    log(`keymesh is up: ${treeSize} process(es) in its tree, RSS ${fmtMB(this.idleRssBytes)}; clock ticks ${clockTicks()}/s`);

    this.client = new LoadClient<LoadSpec, LoadResult>(join(__dirname, "loadgen.js"));
  }

  /** Ends the throughput scenarios' mock, keymesh and load client (their CPU would only add noise later). */
  async stopThroughputServices(): Promise<void> {
    this.sampler?.stop();
    this.client?.kill();
    await Promise.all([this.keymesh?.stop(), this.mock?.stop()]);
  }

  /** The scratch dir, made on first use and removed by stop(). */
  ensureWorkDir(): string {
    this.workDir ??= mkdtempSync(join(tmpdir(), "keymesh-bench-"));
    return this.workDir;
  }

  /** A `keymesh up` of its own for a resilience scenario; a death while it runs fails the bench. */
  async startExtraKeymesh(name: string, configYaml: string): Promise<KeymeshHandle> {
    const configPath = join(this.ensureWorkDir(), `${name}.yaml`);
    writeFileSync(configPath, configYaml);
    const port = await freePort();
    log(`starting ${name} on 127.0.0.1:${port}`);
    const service = await this.startExtraService(
      name, [this.keymeshBin(), "up", "--config", configPath],
      // a free gRPC port too: the default 50051 may be taken by another keymesh
      { ...process.env, KEYMESH_HTTP_PORT: String(port), KEYMESH_GRPC_PORT: String(await freePort()) },
      KEYMESH_READY,
    );
    return { origin: `http://127.0.0.1:${port}`, stop: () => service.stop() };
  }

  /** A service of its own for a later scenario, run from the scratch dir; a death while it runs fails the bench. */
  async startExtraService(name: string, args: readonly string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<ServiceHandle> {
    const child = new ManagedChild(name, args, env, this.ensureWorkDir(), this.options.verbose);
    this.extras.add(child);
    const readyLine = await child.waitReady(ready, KEYMESH_READY_TIMEOUT_MS);
    void child.exited.then((how) => {
      if (!child.stoppedOnPurpose) {
        this.failFatal?.(new HarnessError(`${child.name} exited unexpectedly (${String(how)}); last output:\n${child.recentOutput()}`));
      }
    });
    return {
      pid: child.pid,
      readyLine,
      stop: async () => {
        await child.stop();
        this.extras.delete(child);
      },
    };
  }

  keymeshBin(): string {
    const keymeshBin = join(this.options.root, "services/cli/bin/keymesh.js");
    if (!existsSync(keymeshBin)) throw new HarnessError(`${keymeshBin} not found: build first (npm run build), or set BENCH_ROOT`);
    return keymeshBin;
  }

  /** Ends `work` early with the harness error when a service died. */
  guard<T>(work: Promise<T>): Promise<T> {
    return Promise.race([work, this.fatal]);
  }

  async stop(): Promise<void> {
    this.sampler?.stop();
    this.client?.kill();
    await Promise.all([this.keymesh?.stop(), this.mock?.stop(), ...[...this.extras].map((c) => c.stop())]);
    if (this.workDir !== null) rmSync(this.workDir, { recursive: true, force: true });
    this.workDir = null;
  }

  killNow(): void {
    this.client?.kill();
    for (const child of this.extras) child.killNow();
    this.keymesh?.killNow();
    this.mock?.killNow();
  }

  async preflight(): Promise<void> {
    for (const target of ["direct", "keymesh"] as const) {
      for (const stream of [false, true]) {
        const outcome = await this.probe(target, stream);
        log(`preflight ${target} ${stream ? "stream" : "plain"}: ${outcome}`);
      }
    }
  }

  async warmUp(): Promise<void> {
    log(`warm-up: ${INITIAL_WARMUP_MS / 1000} s of plain c=16 on each target (not counted)`);
    for (const target of ["direct", "keymesh"] as const) {
      await this.segment(target, SCENARIOS[0]!, { warmupMs: 0, durationMs: INITIAL_WARMUP_MS });
    }
  }

  async runScenarios(): Promise<void> {
    const { only } = this.options;
    for (const scenario of SCENARIOS) {
      if (only !== null && !only.has(scenario.name)) continue;
      if (scenario.mode === "open") await this.ensureLightRate();
      const report = await this.runScenario(scenario);
      this.reports.push(report);
      console.log(`\n${renderScenario(report)}${scenario.mode === "open" ? `\noffered rate: ${this.lightRateRps} req/s (${this.lightRateSource})` : ""}`);
    }
  }

  async runSoak(soakSeconds: number): Promise<SoakReport> {
    const durationMs = Math.round(soakSeconds * 1000);
    // each minute; shorter soaks (trying it out) still get a few points
    const everyMs = durationMs >= 120_000 ? 60_000 : Math.max(1_000, Math.floor(durationMs / 4));
    const points: SoakPoint[] = [];
    const sampler = this.sampler!;
    let startWallMs = 0;
    let lastOk = 0;
    let lastElapsedMs = 0;
    const record = (elapsedMs: number, ok: number, errors: number): void => {
      void sampler.sample().then((s) => {
        const rps = elapsedMs > lastElapsedMs ? ((ok - lastOk) * 1000) / (elapsedMs - lastElapsedMs) : NaN;
        lastOk = ok;
        lastElapsedMs = elapsedMs;
        const point = { elapsedSeconds: elapsedMs / 1000, rssBytes: s?.bytes ?? NaN, requestsPerSecond: rps, errors };
        points.push(point);
        const first = points[0]!.rssBytes;
        log(`soak t=${point.elapsedSeconds.toFixed(0)} s  RSS ${fmtMB(point.rssBytes)} (${fmtPct((100 * (point.rssBytes - first)) / first)})  ${Number.isFinite(rps) ? rps.toFixed(0) : "-"} req/s  errors ${errors}`);
      });
    };
    log(`soak: plain c=16 through keymesh for ${soakSeconds} s, RSS every ${everyMs / 1000} s`);
    const timing = { warmupMs: this.options.warmupSeconds * 1000, durationMs, progressEveryMs: everyMs };
    const totals = await this.segment("keymesh", SCENARIOS[0]!, timing, {
      onMeasureStart: () => {
        startWallMs = Date.now();
        this.loadStartWallMs = Math.min(this.loadStartWallMs, startWallMs);
        record(0, 0, 0);
      },
      onProgress: (p) => record(p.elapsedMs, p.ok, p.errors),
    });
    const end = await sampler.sample();
    const endPoint = {
      elapsedSeconds: totals.measuredMs / 1000, rssBytes: end?.bytes ?? NaN,
      requestsPerSecond: totals.measuredMs > lastElapsedMs ? ((totals.ok - lastOk) * 1000) / (totals.measuredMs - lastElapsedMs) : NaN,
      errors: totals.errors,
    };
    points.push(endPoint);
    const stats = summarizeTarget("keymesh", totals);
    const startRss = points[0]!.rssBytes;
    const samples = sampler.since(startWallMs);
    const peakBytes = samples.reduce((peak, s) => Math.max(peak, s.bytes), 0);
    // RSS under constant load saws up and down by tens of MB as the heap grows
    // and collects, so two single readings say more about where each caught
    // the saw than about a trend. Growth compares the mean of the window
    // after warm-up with the mean of the last window of the same length.
    const windowMs = Math.min(SOAK_WINDOW_MS, Math.floor(durationMs / 4));
    const endWallMs = startWallMs + totals.measuredMs;
    const early = meanBytes(samples, startWallMs + windowMs, startWallMs + 2 * windowMs);
    const late = meanBytes(samples, endWallMs - windowMs, endWallMs);
    return {
      seconds: soakSeconds, points, stats,
      startRssBytes: startRss, endRssBytes: endPoint.rssBytes,
      windowSeconds: windowMs / 1000, earlyMeanRssBytes: early, lateMeanRssBytes: late,
      growthPct: (100 * (late - early)) / early,
      peakRssBytes: peakBytes,
    };
  }

  memory(): MemoryReport {
    return summarizeMemory(this.idleRssBytes, this.sampler?.since() ?? [], this.loadStartWallMs);
  }

  scenarioReports(): readonly ScenarioReport[] {
    return this.reports;
  }

  lightRate(): { rps: number; source: string } {
    return { rps: this.lightRateRps, source: this.lightRateSource };
  }

  private async runScenario(scenario: Scenario): Promise<ScenarioReport> {
    const { rounds, seconds, warmupSeconds } = this.options;
    const segmentMs = (seconds * 1000) / rounds;
    const parts: Record<Target, TargetTotals[]> = { direct: [], keymesh: [] };
    for (let round = 0; round < rounds; round++) {
      // ABBA order: drift over the scenario (thermal, noisy neighbours) hits both targets alike
      const order: Target[] = round % 2 === 0 ? ["direct", "keymesh"] : ["keymesh", "direct"];
      for (const target of order) {
        log(`${scenario.name}: ${target}, round ${round + 1}/${rounds} (${(segmentMs / 1000).toFixed(1)} s)`);
        parts[target].push(await this.segment(target, scenario, { warmupMs: warmupSeconds * 1000, durationMs: segmentMs, rateRps: this.lightRateRps }));
      }
    }
    const direct = mergeTotals(parts.direct);
    const keymesh = mergeTotals(parts.keymesh);
    if (this.options.tails) for (const [target, totals] of [["direct", direct], ["keymesh", keymesh]] as const) log(`${scenario.name} latency ${tailLine(target, totals.latencyMs)}`);
    return compareTargets(scenario, summarizeTarget("direct", direct), summarizeTarget("keymesh", keymesh));
  }

  private async ensureLightRate(): Promise<void> {
    if (Number.isFinite(this.lightRateRps)) return;
    if (this.options.rateRps !== null) {
      this.lightRateRps = this.options.rateRps;
      this.lightRateSource = "BENCH_RATE";
      return;
    }
    const measured = this.reports.find((r) => r.name === "plain-c16");
    let directRps = measured?.direct.requestsPerSecond ?? NaN;
    let source = "one tenth of direct plain-c16";
    if (!Number.isFinite(directRps) || directRps <= 0) {
      log(`calibrating the light rate: direct plain c=16 for ${CALIBRATION_MS / 1000} s`);
      const totals = await this.segment("direct", SCENARIOS[0]!, { warmupMs: this.options.warmupSeconds * 1000, durationMs: CALIBRATION_MS });
      directRps = summarizeTarget("direct", totals).requestsPerSecond;
      source = "one tenth of a direct c=16 calibration run";
    }
    this.lightRateRps = Math.max(1, Math.round(directRps / 10));
    this.lightRateSource = `${source}, ${directRps.toFixed(0)} req/s`;
  }

  private async segment(target: Target, scenario: Scenario, timing: SegmentTiming, extraHooks: RunHooks = {}): Promise<TargetTotals> {
    const { warmupMs, durationMs, rateRps = NaN, progressEveryMs = 0 } = timing;
    const endpoint = this.endpoints![target];
    const client = this.client!;
    const pids = { keymesh: this.keymesh!.pid, mock: this.mock!.pid, client: client.pid };
    let startMarks: Promise<CpuMarks> | null = null;
    let endMarks: Promise<CpuMarks> | null = null;
    const marks = async (): Promise<CpuMarks> => {
      const [keymesh, mock, clientCpu] = await Promise.all([snapshotTreeCpu(pids.keymesh), snapshotTreeCpu(pids.mock), snapshotTreeCpu(pids.client)]);
      return { keymesh, mock, client: clientCpu };
    };
    const spec: Omit<LoadSpec, "runId"> = {
      origin: endpoint.origin,
      path: CHAT_PATH,
      authorization: endpoint.authorization,
      body: requestBody(scenario.stream),
      stream: scenario.stream,
      mode: scenario.mode,
      concurrency: scenario.concurrency,
      rateRps,
      connections: OPEN_LOOP_CONNECTIONS,
      warmupMs,
      durationMs,
      progressEveryMs,
      maxSamples: SAMPLES_PER_SEGMENT,
    };
    const result = await Promise.race([
      client.run(spec, {
        ...extraHooks,
        onMeasureStart: () => {
          startMarks = marks();
          if (target === "keymesh" && warmupMs > 0) this.loadStartWallMs = Math.min(this.loadStartWallMs, Date.now());
          extraHooks.onMeasureStart?.();
        },
        onMeasureEnd: () => {
          endMarks = marks();
          extraHooks.onMeasureEnd?.();
        },
      }),
      this.fatal,
    ]);
    const before = await (startMarks ?? marks());
    const after = await (endMarks ?? marks());
    return {
      ok: result.ok,
      errors: result.errors,
      dropped: result.dropped,
      firstError: result.firstError,
      measuredMs: result.measuredMs,
      latencyMs: result.latencyMs,
      ttfbMs: result.ttfbMs,
      keymeshCpuMs: cpuDeltaMs(before.keymesh, after.keymesh),
      mockCpuMs: cpuDeltaMs(before.mock, after.mock),
      clientCpuMs: cpuDeltaMs(before.client, after.client),
    };
  }

  private async probe(target: Target, stream: boolean): Promise<string> {
    const endpoint = this.endpoints![target];
    const client = new Client(endpoint.origin);
    try {
      const response = await client.request({
        method: "POST",
        path: CHAT_PATH,
        headers: { "content-type": "application/json", authorization: endpoint.authorization },
        body: requestBody(stream),
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      const body = await response.body.text();
      const shown = body.replace(/\s+/g, " ").slice(0, 300);
      return `HTTP ${response.statusCode}, ${body.length} bytes: ${shown}`;
    } catch (error) {
      return `network error: ${error instanceof Error ? error.message : String(error)}`;
    } finally {
      await client.close().catch(() => undefined);
    }
  }
}

function mergeTotals(parts: readonly TargetTotals[]): TargetTotals {
  const sum = (pick: (t: TargetTotals) => number): number => parts.reduce((n, t) => n + pick(t), 0);
  return {
    ok: sum((t) => t.ok),
    errors: sum((t) => t.errors),
    dropped: sum((t) => t.dropped),
    firstError: parts.find((t) => t.firstError !== null)?.firstError ?? null,
    measuredMs: sum((t) => t.measuredMs),
    latencyMs: concatSamples(parts.map((t) => t.latencyMs)),
    ttfbMs: concatSamples(parts.map((t) => t.ttfbMs)),
    keymeshCpuMs: sum((t) => t.keymeshCpuMs),
    mockCpuMs: sum((t) => t.mockCpuMs),
    clientCpuMs: sum((t) => t.clientCpuMs),
  };
}

function keymeshConfig(mockPort: number): string {
  return [
    "providers:",
    `  mock: { kind: openai, base_url: http://127.0.0.1:${mockPort}/v1 }`,
    "pools:",
    "  main:",
    "    provider: mock",
    "    keys:",
    ...PROVIDER_KEYS.map((secret, i) => `      - { id: k${i + 1}, secret: ${secret} }`),
    "routes:",
    `  ${MODEL}: { targets: [ { pool: main, model: ${MODEL} } ] }`,
    "tenants:",
    `  bench: { virtual_keys: [ ${VIRTUAL_KEY} ] }`,
    "",
  ].join("\n");
}

// ---------------------------------------------------------------- results

interface SoakPoint {
  elapsedSeconds: number;
  rssBytes: number;
  requestsPerSecond: number;
  errors: number;
}

interface SoakReport {
  seconds: number;
  points: SoakPoint[];
  stats: ReturnType<typeof summarizeTarget>;
  startRssBytes: number;
  endRssBytes: number;
  /** Growth compares these means: the window after a warm-up window, and the last one. */
  windowSeconds: number;
  earlyMeanRssBytes: number;
  lateMeanRssBytes: number;
  growthPct: number;
  peakRssBytes: number;
}

function meanBytes(samples: readonly { atMs: number; bytes: number }[], fromMs: number, toMs: number): number {
  let sum = 0;
  let count = 0;
  for (const s of samples) {
    if (s.atMs < fromMs || s.atMs > toMs) continue;
    sum += s.bytes;
    count++;
  }
  return count === 0 ? NaN : sum / count;
}

function renderSoak(soak: SoakReport): string {
  const { stats } = soak;
  const first = soak.points[0]?.rssBytes ?? NaN;
  return [
    `== soak: plain chat completions through keymesh, concurrency 16, ${soak.seconds} s`,
    renderTable(
      ["t (s)", "RSS", "vs start", "req/s (interval)", "errors (cumulative)"],
      soak.points.map((p) => [
        p.elapsedSeconds.toFixed(0), fmtMB(p.rssBytes), fmtPct((100 * (p.rssBytes - first)) / first),
        Number.isFinite(p.requestsPerSecond) ? p.requestsPerSecond.toFixed(0) : "-", String(p.errors),
      ]),
    ),
    "",
    renderTable(
      ["req/s", "p50 ms", "p99 ms", "errors", "keymesh cpu ms/req", "RSS start", "RSS end", `mean RSS ${soak.windowSeconds}-${2 * soak.windowSeconds} s`, `mean RSS last ${soak.windowSeconds} s`, "growth", "peak"],
      [[
        stats.requestsPerSecond.toFixed(0), fmtMs(stats.p50Ms), fmtMs(stats.p99Ms), String(stats.errors),
        fmtMs(stats.keymeshCpuMsPerRequest), fmtMB(soak.startRssBytes), fmtMB(soak.endRssBytes),
        fmtMB(soak.earlyMeanRssBytes), fmtMB(soak.lateMeanRssBytes), fmtPct(soak.growthPct), fmtMB(soak.peakRssBytes),
      ]],
    ),
    `growth: mean RSS of the last ${soak.windowSeconds} s against the ${soak.windowSeconds} s after a ${soak.windowSeconds} s warm-up (single readings ride the GC's saw)`,
    ...(stats.firstError !== null ? [`first error: ${stats.firstError.replace(/\s+/g, " ").slice(0, 400)}`] : []),
  ].join("\n");
}

function scenarioChecks(reports: readonly ScenarioReport[], memory: MemoryReport): Check[] {
  const byName = (name: string): ScenarioReport | undefined => reports.find((r) => r.name === name);
  const value = (name: string, pick: (r: ScenarioReport) => number): number => {
    const report = byName(name);
    return report === undefined ? NaN : pick(report);
  };
  const streamTtfbSource = byName("light-stream") !== undefined ? "light-stream" : "stream-c16";
  const keymeshErrors = reports.length === 0 ? NaN : reports.reduce((n, r) => n + r.keymesh.errors + r.keymesh.dropped, 0);
  return [
    check("plain c=16 throughput vs direct", value("plain-c16", (r) => r.throughputPct), ">= 25%", (v) => v >= 25, fmtPct),
    check("light plain added p50", value("light-plain", (r) => r.addedP50Ms), "<= 1 ms", (v) => v <= 1, fmtSignedMs),
    check("light plain added p99", value("light-plain", (r) => r.addedP99Ms), "<= 5 ms", (v) => v <= 5, fmtSignedMs),
    check("light stream added p50", value("light-stream", (r) => r.addedP50Ms), "<= 1 ms", (v) => v <= 1, fmtSignedMs),
    check("light stream added p99", value("light-stream", (r) => r.addedP99Ms), "<= 5 ms", (v) => v <= 5, fmtSignedMs),
    check(`stream added TTFB p50 (${streamTtfbSource})`, value(streamTtfbSource, (r) => r.addedTtfbP50Ms), "<= 1 ms", (v) => v <= 1, fmtSignedMs),
    check("keymesh RSS peak", memory.peakBytes, "<= 300 MB", (v) => v <= RSS_GOAL_BYTES, fmtMB),
    check("errors through keymesh", keymeshErrors, "0", (v) => v === 0, String),
  ];
}

function soakChecks(soak: SoakReport, memory: MemoryReport): Check[] {
  return [
    check("soak RSS growth", soak.growthPct, `< ${SOAK_GROWTH_GOAL_PCT}%`, (v) => v < SOAK_GROWTH_GOAL_PCT, fmtPct),
    check("keymesh RSS peak", memory.peakBytes, "<= 300 MB", (v) => v <= RSS_GOAL_BYTES, fmtMB),
    check("errors through keymesh", soak.stats.errors, "0", (v) => v === 0, String),
  ];
}

/** Samples are left out: the JSON is for the closing note, not for re-analysis. */
function writeJson(path: string, options: BenchOptions, content: Record<string, unknown>): void {
  const { root: _root, jsonPath: _json, only, ...settings } = options;
  const document = {
    generatedAt: new Date().toISOString(),
    machine: { node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", loadavg: loadavg() },
    settings: { ...settings, only: only === null ? null : [...only] },
    ...content,
  };
  writeFileSync(path, `${JSON.stringify(document, (_key, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2)}\n`);
  log(`results written to ${path}`);
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  let options: BenchOptions;
  try {
    options = readOptions(process.argv.slice(2));
  } catch (error) {
    log(error instanceof Error ? error.message : String(error));
    return 2;
  }
  const bench = new Bench(options);
  let stopping: Promise<void> | null = null;
  let interrupted = false;
  const stopOnce = (): Promise<void> => (stopping ??= bench.stop());
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    process.once(signal, () => {
      interrupted = true;
      log(`${signal}: stopping the services`);
      void stopOnce().finally(() => process.exit(code));
    });
  }
  process.once("exit", () => bench.killNow());

  try {
    const [load1m] = loadavg();
    if (load1m !== undefined && load1m > 1) {
      log(`note: load average ${load1m.toFixed(2)} before starting; other work on this machine will add noise (p99 most of all)`);
    }
    let checks: Check[];
    let content: Record<string, unknown>;
    const { only } = options;
    const throughputSelected = only === null || SCENARIOS.some((s) => only.has(s.name));
    const resilienceSelected = options.soakSeconds !== null ? [] : RESILIENCE_SCENARIOS.filter((s) => only === null || only.has(s.name));
    const limiterSelected = options.soakSeconds === null && (only === null || only.has(LIMITER_SCENARIO.name));
    if (options.soakSeconds !== null || throughputSelected) {
      await bench.start();
      await bench.preflight();
      await bench.warmUp();
    }
    if (options.soakSeconds !== null) {
      const soak = await bench.runSoak(options.soakSeconds);
      const memory = bench.memory();
      console.log(`\n${renderSoak(soak)}`);
      checks = soakChecks(soak, memory);
      content = { soak, memory };
    } else {
      checks = [];
      content = {};
      if (throughputSelected) {
        log(`${options.seconds} s per target per scenario in ${options.rounds} alternating round(s), ${options.warmupSeconds} s warm-up each`);
        await bench.runScenarios();
        const memory = bench.memory();
        console.log(`\n${renderMemory(memory)}`);
        checks = scenarioChecks(bench.scenarioReports(), memory);
        content = { scenarios: bench.scenarioReports(), lightRate: bench.lightRate(), memory };
        await bench.stopThroughputServices();
      }
      const resilience: ResilienceResult[] = [];
      for (const scenario of resilienceSelected) {
        const result = await runResilience(scenario.name, {
          startKeymesh: (name, configYaml) => bench.startExtraKeymesh(name, configYaml),
          guard: (work) => bench.guard(work),
          log,
        });
        resilience.push(result);
        console.log(`\n${result.text}`);
        checks.push(...result.checks);
      }
      if (resilience.length > 0) content = { ...content, resilience: resilience.map((r) => ({ name: r.name, ...(r.json as object) })) };
      if (limiterSelected) {
        const limiter = await runLimiterBench({
          keymeshBin: bench.keymeshBin(),
          workDir: () => bench.ensureWorkDir(),
          startService: (name, args, env, ready) => bench.startExtraService(name, args, env, ready),
          guard: (work) => bench.guard(work),
          log,
        });
        console.log(`\n${limiter.text}`);
        checks.push(...limiter.checks);
        content = { ...content, limiter: limiter.json };
      }
    }
    console.log(`\n${renderSummary(options.bareProxy ? "targets (BENCH_PROXY=bare: the keymesh rows are the bare proxy, the floor)" : "targets", checks)}`);
    if (options.jsonPath !== null) writeJson(options.jsonPath, options, { ...content, checks });
    return 0;
  } catch (error) {
    if (interrupted) return 1;
    log(`harness failed: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  } finally {
    await stopOnce();
  }
}

void main().then((code) => process.exit(code));
