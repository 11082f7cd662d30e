/**
 * The limiter scenario's load client, forked by limiter.ts so its CPU never
 * shares an event loop with the limiter or the orchestrator. It calls the
 * limiter as a router does: the generated client from `@keymesh/rpc`, one
 * long-lived channel, `concurrency` calls in flight (closed loop) for a bounded
 * time. Each call reuses one request built up front.
 */
import { performance } from "node:perf_hooks";
import { AcquireOutcome, LimiterService } from "@keymesh/proto/limiter/v1/limiter";
import { closeRpcClient, createRpcClient, type RpcClient } from "@keymesh/rpc";
import { createTelemetry } from "@keymesh/telemetry";
import { serveLoadRuns, type FromLoadProcess } from "./load-client";
import { SampleBuffer } from "./loadgen";

export type LimiterRpc = "acquire" | "acquire-batch" | "grant-leases";

export interface LimiterLoadSpec {
  runId: number;
  /** host:port of the limiter's gRPC server. */
  address: string;
  rpc: LimiterRpc;
  poolId: string;
  /** Calls in flight at all times. */
  concurrency: number;
  /** acquire-batch: requests per call. */
  batchSize: number;
  /** grant-leases: slots asked for per call, and how long the lease holds. */
  wantedSlots: number;
  holdMs: number;
  warmupMs: number;
  durationMs: number;
  maxSamples: number;
}

export interface LimiterLoadResult {
  /** Calls answered with a status OK in the measured window. */
  calls: number;
  /** Calls that failed (a gRPC status other than OK). */
  errors: number;
  firstError: string | null;
  measuredMs: number;
  /** Acquire / AcquireBatch: decisions by outcome. */
  granted: number;
  denied: number;
  /** GrantLeases: leases and the slots in them. */
  leases: number;
  slots: number;
  /** Per call, start to answer, ms; successful calls only. */
  latencyMs: Float64Array;
}

const CALL_TIMEOUT_MS = 10_000;
const ERROR_PAUSE_MS = 10;

type Phase = "warmup" | "measure" | "drain";

interface Tally {
  granted: number;
  denied: number;
  leases: number;
  slots: number;
}

function emptyTally(): Tally {
  return { granted: 0, denied: 0, leases: 0, slots: 0 };
}

/** One call of the spec's RPC, its outcome added to `tally`. */
type Call = (tally: Tally) => Promise<void>;

function callOf(client: RpcClient<typeof LimiterService>, spec: LimiterLoadSpec): Call {
  const options = { timeoutMs: CALL_TIMEOUT_MS };
  switch (spec.rpc) {
    case "acquire": {
      const request = { poolId: spec.poolId };
      return async (tally) => {
        const response = await client.acquire(request, options);
        if (response.outcome === AcquireOutcome.GRANTED) tally.granted++;
        else tally.denied++;
      };
    }
    case "acquire-batch": {
      const request = { requests: Array.from({ length: spec.batchSize }, () => ({ poolId: spec.poolId })) };
      return async (tally) => {
        const response = await client.acquireBatch(request, options);
        for (const r of response.responses) {
          if (r.outcome === AcquireOutcome.GRANTED) tally.granted++;
          else tally.denied++;
        }
      };
    }
    case "grant-leases": {
      const wholeSeconds = Math.floor(spec.holdMs / 1000);
      const request = {
        requests: [{ poolId: spec.poolId, wantedSlots: spec.wantedSlots }],
        hold: { seconds: BigInt(wholeSeconds), nanos: (spec.holdMs - wholeSeconds * 1000) * 1e6 },
      };
      return async (tally) => {
        const response = await client.grantLeases(request, options);
        for (const pool of response.pools) {
          for (const lease of pool.leases) {
            tally.leases++;
            tally.slots += lease.slots;
          }
        }
      };
    }
  }
}

async function runLoad(spec: LimiterLoadSpec, send: (message: FromLoadProcess<LimiterLoadResult>) => void): Promise<LimiterLoadResult> {
  const client = createRpcClient(LimiterService, spec.address, { telemetry: createTelemetry("bench-limiter-load") });
  const call = callOf(client, spec);
  const latencies = new SampleBuffer(spec.maxSamples);
  const measured = emptyTally();
  let phase: Phase = "warmup";
  let calls = 0;
  let errors = 0;
  let firstError: string | null = null;
  let measureStartMs = 0;
  let measureEndMs = 0;
  const timers = [
    setTimeout(() => {
      phase = "measure";
      measureStartMs = performance.now();
      send({ type: "measure-start", runId: spec.runId });
    }, spec.warmupMs),
    setTimeout(() => {
      phase = "drain";
      measureEndMs = performance.now();
      send({ type: "measure-end", runId: spec.runId });
    }, spec.warmupMs + spec.durationMs),
  ];

  const worker = async (): Promise<void> => {
    // this call's outcome, added to `measured` only when the call counts
    const scratch = emptyTally();
    while (phase !== "drain") {
      const startMs = performance.now();
      // a call counts when it both started and ended inside the window, so
      // calls begun during warm-up do not inflate the window's rate
      const startedInWindow = phase === "measure";
      scratch.granted = scratch.denied = scratch.leases = scratch.slots = 0;
      try {
        await call(scratch);
        const endMs = performance.now();
        if (startedInWindow && phase === "measure") {
          calls++;
          latencies.push(endMs - startMs);
          measured.granted += scratch.granted;
          measured.denied += scratch.denied;
          measured.leases += scratch.leases;
          measured.slots += scratch.slots;
        }
      } catch (error) {
        if (startedInWindow && phase === "measure") {
          errors++;
          firstError ??= error instanceof Error ? error.message : String(error);
        }
        // a dead limiter fails at once: pause rather than spin
        await new Promise((done) => setTimeout(done, ERROR_PAUSE_MS));
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: spec.concurrency }, worker));
  } finally {
    for (const timer of timers) clearTimeout(timer);
    closeRpcClient(client);
  }
  return {
    calls, errors, firstError, measuredMs: measureEndMs - measureStartMs,
    ...measured,
    latencyMs: latencies.toArray(),
  };
}

if (require.main === module) serveLoadRuns<LimiterLoadSpec, LimiterLoadResult>(runLoad);
