/**
 * Both ends of a forked load process: `LoadClient` in the orchestrator, and
 * `serveLoadRuns` in the child. A load process runs one measurement at a time
 * and reports its phases (so the orchestrator can read CPU exactly at the edges
 * of the measured window) and then its result over IPC. Shared by the HTTP load
 * client (loadgen.ts) and the limiter's gRPC one (limiter-loadgen.ts).
 */
import { fork, type ChildProcess } from "node:child_process";

/** What the load process says about run `runId`; `Result` is the run's own summary. */
export type FromLoadProcess<Result> =
  | { type: "ready" }
  | { type: "measure-start"; runId: number }
  | { type: "progress"; runId: number; elapsedMs: number; ok: number; errors: number }
  | { type: "measure-end"; runId: number }
  | { type: "result"; runId: number; result: Result }
  | { type: "failed"; runId: number; message: string };

export type ToLoadProcess<Spec> = { type: "run"; spec: Spec };

export interface RunHooks {
  onMeasureStart?: () => void;
  onMeasureEnd?: () => void;
  onProgress?: (message: Extract<FromLoadProcess<unknown>, { type: "progress" }>) => void;
}

export class LoadClientError extends Error {}

/** The forked load process; one run at a time. */
export class LoadClient<Spec extends { runId: number }, Result> {
  readonly child: ChildProcess;
  private readonly ready: Promise<void>;
  private nextRunId = 1;
  private current: { runId: number; hooks: RunHooks; resolve: (r: Result) => void; reject: (e: Error) => void } | null = null;

  constructor(script: string) {
    // advanced serialization carries Float64Array samples as binary, not JSON
    this.child = fork(script, [], { serialization: "advanced", stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.ready = new Promise((resolveReady, rejectReady) => {
      this.child.on("message", (message: FromLoadProcess<Result>) => {
        if (message.type === "ready") resolveReady();
        else this.dispatch(message);
      });
      this.child.once("exit", (code, signal) => {
        const error = new LoadClientError(`load client exited (${signal ?? code})`);
        rejectReady(error);
        this.current?.reject(error);
        this.current = null;
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  async run(spec: Omit<Spec, "runId">, hooks: RunHooks = {}): Promise<Result> {
    await this.ready;
    if (this.current !== null) throw new LoadClientError("load client is busy");
    const runId = this.nextRunId++;
    return new Promise<Result>((resolveRun, rejectRun) => {
      this.current = { runId, hooks, resolve: resolveRun, reject: rejectRun };
      const message: ToLoadProcess<Spec> = { type: "run", spec: { ...spec, runId } as Spec };
      this.child.send(message);
    });
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }

  private dispatch(message: Exclude<FromLoadProcess<Result>, { type: "ready" }>): void {
    const current = this.current;
    if (current === null || message.runId !== current.runId) return;
    switch (message.type) {
      case "measure-start":
        current.hooks.onMeasureStart?.();
        break;
      case "measure-end":
        current.hooks.onMeasureEnd?.();
        break;
      case "progress":
        current.hooks.onProgress?.(message);
        break;
      case "result":
        this.current = null;
        current.resolve(message.result);
        break;
      case "failed":
        this.current = null;
        current.reject(new LoadClientError(`load client: ${message.message}`));
        break;
    }
  }
}

/** The load process's side: runs each requested spec with `run`, one at a time, and reports back. */
export function serveLoadRuns<Spec extends { runId: number }, Result>(
  run: (spec: Spec, send: (message: FromLoadProcess<Result>) => void) => Promise<Result>,
): void {
  const send = (message: FromLoadProcess<Result>): void => {
    process.send?.(message);
  };
  // the orchestrator going away (or its IPC channel) ends this process
  process.on("disconnect", () => process.exit(0));
  let busy = false;
  process.on("message", (message: ToLoadProcess<Spec>) => {
    if (message.type !== "run") return;
    const { spec } = message;
    if (busy) {
      send({ type: "failed", runId: spec.runId, message: "a run is already in progress" });
      return;
    }
    busy = true;
    Promise.resolve()
      .then(() => run(spec, send))
      .then(
        (result) => send({ type: "result", runId: spec.runId, result }),
        (error: unknown) => send({ type: "failed", runId: spec.runId, message: String(error) }),
      )
      .finally(() => {
        busy = false;
      });
  });
  send({ type: "ready" });
}
