/**
 * The load client, run as its own process (forked by run.ts) so its CPU never
 * competes inside the orchestrator's event loop. One scenario at a time: warm
 * up, measure, drain, send the samples back over IPC.
 *
 * Lean on purpose: the machine has 2 cores shared with the mock and keymesh,
 * so every request reuses one preallocated body and header list, samples go
 * into a Float64Array, and nothing is logged per request.
 */
import { performance } from "node:perf_hooks";
import { Pool, type Dispatcher } from "undici";
import { serveLoadRuns, type FromLoadProcess } from "./load-client";

export interface LoadSpec {
  /** Names this run in every message about it. */
  runId: number;
  /** e.g. `http://127.0.0.1:41234` */
  origin: string;
  path: string;
  authorization: string;
  /** JSON request body, sent as-is on every request. */
  body: string;
  /** Expect SSE and require it to end with `data: [DONE]`. */
  stream: boolean;
  mode: "closed" | "open";
  /** closed loop: requests in flight at all times (one connection each). */
  concurrency: number;
  /** open loop: requests started per second, whatever the responses do. */
  rateRps: number;
  /** open loop: connections in the pool (a bound, created on demand). */
  connections: number;
  warmupMs: number;
  durationMs: number;
  /** Send a `progress` message this often while measuring (0: never). */
  progressEveryMs: number;
  /** Beyond this many samples only counts are kept (bounds memory in soak runs). */
  maxSamples: number;
}

export interface LoadResult {
  ok: number;
  errors: number;
  /** Open loop only: starts skipped because too many were already in flight. */
  dropped: number;
  /** First failure in the measured window: status and body, or the network error. */
  firstError: string | null;
  measuredMs: number;
  /** Start of request to end of body, ms, successful requests only. */
  latencyMs: Float64Array;
  /** Start of request to first body byte, ms, successful requests only. */
  ttfbMs: Float64Array;
}

export type FromLoadgen = FromLoadProcess<LoadResult>;

const INITIAL_SAMPLE_CAPACITY = 1 << 16;
const MAX_IN_FLIGHT_OPEN_LOOP = 1024;
const DRAIN_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
const ERROR_BODY_LIMIT_BYTES = 2048;
const NETWORK_ERROR = "network error";
const NETWORK_ERROR_PAUSE_MS = 10;
const DONE_MARKER = Buffer.from("[DONE]");

/** Latency samples in a growable Float64Array, capped at `maxSamples` (beyond it only counts are kept). */
export class SampleBuffer {
  private values = new Float64Array(INITIAL_SAMPLE_CAPACITY);
  private count = 0;

  constructor(private readonly maxSamples: number) {}

  push(value: number): void {
    if (this.count === this.values.length) {
      if (this.count >= this.maxSamples) return;
      const grown = new Float64Array(Math.min(this.values.length * 2, this.maxSamples));
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.count++] = value;
  }

  toArray(): Float64Array {
    return this.values.slice(0, this.count);
  }
}

type Phase = "warmup" | "measure" | "drain";

/** One scenario run: owns its pool, counters and samples. */
class LoadRun {
  private readonly pool: Pool;
  private readonly dispatchOptions: Dispatcher.DispatchOptions;
  private readonly latencies: SampleBuffer;
  private readonly ttfbs: SampleBuffer;
  private phase: Phase = "warmup";
  private ok = 0;
  private errors = 0;
  private dropped = 0;
  private firstError: string | null = null;
  private inFlight = 0;
  private measureStartMs = 0;
  private measureEndMs = 0;
  private onDrained: (() => void) | null = null;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly spec: LoadSpec,
    private readonly send: (message: FromLoadgen) => void,
  ) {
    if (spec.mode === "open" && !(spec.rateRps > 0)) throw new Error(`open loop needs a rate, got ${spec.rateRps}`);
    if (spec.mode === "closed" && !(spec.concurrency >= 1)) throw new Error(`closed loop needs a concurrency, got ${spec.concurrency}`);
    const connections = spec.mode === "closed" ? spec.concurrency : spec.connections;
    this.pool = new Pool(spec.origin, {
      connections,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      headersTimeout: REQUEST_TIMEOUT_MS,
      bodyTimeout: REQUEST_TIMEOUT_MS,
    });
    this.dispatchOptions = {
      method: "POST",
      path: spec.path,
      headers: [
        "content-type", "application/json",
        "accept", spec.stream ? "text/event-stream" : "application/json",
        "authorization", spec.authorization,
      ],
      body: Buffer.from(spec.body),
    };
    this.latencies = new SampleBuffer(spec.maxSamples);
    this.ttfbs = new SampleBuffer(spec.maxSamples);
  }

  async run(): Promise<LoadResult> {
    const { spec } = this;
    this.later(spec.warmupMs, () => {
      this.phase = "measure";
      this.measureStartMs = performance.now();
      this.send({ type: "measure-start", runId: spec.runId });
    });
    if (spec.progressEveryMs > 0) {
      for (let at = spec.progressEveryMs; at < spec.durationMs; at += spec.progressEveryMs) {
        this.later(spec.warmupMs + at, () => this.send({
          type: "progress", runId: spec.runId,
          elapsedMs: performance.now() - this.measureStartMs, ok: this.ok, errors: this.errors,
        }));
      }
    }
    const drained = new Promise<void>((resolve) => {
      this.onDrained = resolve;
    });
    this.later(spec.warmupMs + spec.durationMs, () => {
      this.phase = "drain";
      this.measureEndMs = performance.now();
      this.send({ type: "measure-end", runId: spec.runId });
      this.checkDrained();
    });

    if (spec.mode === "closed") {
      for (let i = 0; i < spec.concurrency; i++) this.issue();
    } else {
      this.startArrivals();
    }

    const drainTimeout = new Promise<void>((resolve) => {
      this.later(spec.warmupMs + spec.durationMs + DRAIN_TIMEOUT_MS, resolve);
    });
    await Promise.race([drained, drainTimeout]);
    for (const timer of this.timers) clearTimeout(timer);
    await this.pool.destroy();

    return {
      ok: this.ok,
      errors: this.errors,
      dropped: this.dropped,
      firstError: this.firstError,
      measuredMs: this.measureEndMs - this.measureStartMs,
      latencyMs: this.latencies.toArray(),
      ttfbMs: this.ttfbs.toArray(),
    };
  }

  private later(delayMs: number, fn: () => void): void {
    this.timers.push(setTimeout(fn, delayMs));
  }

  /** Open loop: start requests on a fixed schedule, catching up after a late timer. */
  private startArrivals(): void {
    const intervalMs = 1000 / this.spec.rateRps;
    let nextMs = performance.now();
    const tick = (): void => {
      if (this.phase === "drain") return;
      const nowMs = performance.now();
      while (nextMs <= nowMs) {
        if (this.inFlight < MAX_IN_FLIGHT_OPEN_LOOP) this.issue();
        else if (this.phase === "measure") this.dropped++;
        nextMs += intervalMs;
      }
      setTimeout(tick, nextMs - performance.now());
    };
    tick();
  }

  private issue(): void {
    this.inFlight++;
    this.pool.dispatch(this.dispatchOptions, new Exchange(this, this.spec.stream, performance.now()));
  }

  /** Called once per request by its Exchange. */
  complete(exchange: Exchange, endMs: number, failure: string | null): void {
    this.inFlight--;
    if (this.phase === "measure" && endMs >= this.measureStartMs) {
      if (failure === null) {
        this.ok++;
        this.latencies.push(endMs - exchange.startMs);
        this.ttfbs.push((exchange.firstByteMs || endMs) - exchange.startMs);
      } else {
        this.errors++;
        if (this.firstError === null) this.firstError = failure;
      }
    }
    if (this.phase === "drain") this.checkDrained();
    else if (this.spec.mode === "closed") {
      // a refused connection fails at once: pause so a dead target is not hammered in a tight loop
      if (failure !== null && failure.startsWith(NETWORK_ERROR)) this.pauseThenIssue();
      else this.issue();
    }
  }

  private pauseThenIssue(): void {
    this.inFlight++;
    setTimeout(() => {
      this.inFlight--;
      if (this.phase === "drain") this.checkDrained();
      else this.issue();
    }, NETWORK_ERROR_PAUSE_MS);
  }

  private checkDrained(): void {
    if (this.inFlight === 0 && this.onDrained !== null) {
      this.onDrained();
      this.onDrained = null;
    }
  }
}

/** Handler for one request; also holds its timings. */
class Exchange implements Dispatcher.DispatchHandler {
  firstByteMs = 0;
  private status = 0;
  private errorBody: Buffer[] | null = null;
  private errorBodyBytes = 0;
  private lastChunk: Buffer | null = null;
  private previousChunk: Buffer | null = null;
  private done = false;

  constructor(
    private readonly run: LoadRun,
    private readonly stream: boolean,
    readonly startMs: number,
  ) {}

  // undici treats a handler as the current API only when it has onRequestStart
  onRequestStart(): void {}

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number): void {
    this.status = statusCode;
    if (statusCode < 200 || statusCode > 299) this.errorBody = [];
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.firstByteMs === 0) this.firstByteMs = performance.now();
    if (this.errorBody !== null) {
      if (this.errorBodyBytes < ERROR_BODY_LIMIT_BYTES) {
        this.errorBody.push(chunk);
        this.errorBodyBytes += chunk.length;
      }
    } else if (this.stream) {
      this.previousChunk = this.lastChunk;
      this.lastChunk = chunk;
    }
  }

  onResponseEnd(): void {
    this.finish(this.describeFailure());
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    const code = (error as { code?: unknown }).code;
    this.finish(`${NETWORK_ERROR}${typeof code === "string" ? ` ${code}` : ""}: ${error.message}`);
  }

  private describeFailure(): string | null {
    if (this.errorBody !== null) {
      const body = Buffer.concat(this.errorBody).subarray(0, ERROR_BODY_LIMIT_BYTES).toString("utf8");
      return `HTTP ${this.status}: ${body}`;
    }
    if (this.stream && !this.endsWithDone()) {
      return `HTTP ${this.status}: stream ended without "data: [DONE]"`;
    }
    return null;
  }

  private endsWithDone(): boolean {
    const last = this.lastChunk;
    if (last === null) return false;
    if (last.includes(DONE_MARKER)) return true;
    // the marker may straddle the last two chunks
    return this.previousChunk !== null && Buffer.concat([this.previousChunk, last]).includes(DONE_MARKER);
  }

  private finish(failure: string | null): void {
    // undici reports each request once; the guard keeps a double report from corrupting counts
    if (this.done) return;
    this.done = true;
    this.run.complete(this, performance.now(), failure);
  }
}

if (require.main === module) serveLoadRuns<LoadSpec, LoadResult>((spec, send) => new LoadRun(spec, send).run());
