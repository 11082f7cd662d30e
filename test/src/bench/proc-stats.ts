import { execFileSync } from "node:child_process";
import { readFile, readdir } from "node:fs/promises";

/** CPU time of a process tree at one moment, per process (key `pid:starttime`). */
export type CpuSnapshot = ReadonlyMap<string, number>;

const MAX_TREE_PROCESSES = 512;

let clockTicksPerSecond: number | undefined;

/** USER_HZ from `getconf CLK_TCK`; 100 when getconf is missing (it is 100 on every Linux we run on). */
export function clockTicks(): number {
  if (clockTicksPerSecond === undefined) {
    clockTicksPerSecond = 100;
    try {
      const parsed = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
      if (Number.isInteger(parsed) && parsed > 0) clockTicksPerSecond = parsed;
    } catch {
      // keep the default
    }
  }
  return clockTicksPerSecond;
}

async function readOrNull(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch {
    // the process exited between listing and reading
    return null;
  }
}

/** The pid and every descendant, following /proc/<pid>/task/<tid>/children (needs no procps). */
export async function listProcessTree(rootPid: number): Promise<number[]> {
  const seen = new Set<number>([rootPid]);
  const queue = [rootPid];
  for (let i = 0; i < queue.length && seen.size < MAX_TREE_PROCESSES; i++) {
    const pid = queue[i]!;
    let tids: string[];
    try {
      tids = await readdir(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      const children = await readOrNull(`/proc/${pid}/task/${tid}/children`);
      if (children === null) continue;
      for (const part of children.split(" ")) {
        const child = Number(part);
        if (part !== "" && Number.isInteger(child) && !seen.has(child)) {
          seen.add(child);
          queue.push(child);
        }
      }
    }
  }
  return queue.filter((pid) => seen.has(pid));
}

interface StatFields {
  ticks: number;
  startTime: string;
}

function parseStat(text: string): StatFields | null {
  // comm (field 2) may hold spaces and parentheses: fields after it start past the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const startTime = fields[19];
  if (!Number.isFinite(utime) || !Number.isFinite(stime) || startTime === undefined) return null;
  return { ticks: utime + stime, startTime };
}

export async function snapshotTreeCpu(rootPid: number): Promise<CpuSnapshot> {
  const snapshot = new Map<string, number>();
  for (const pid of await listProcessTree(rootPid)) {
    const text = await readOrNull(`/proc/${pid}/stat`);
    const stat = text === null ? null : parseStat(text);
    if (stat !== null) snapshot.set(`${pid}:${stat.startTime}`, stat.ticks);
  }
  return snapshot;
}

/**
 * CPU ms the tree spent between two snapshots. Per process, so a process that
 * exits in between drops out instead of making the total go backwards, and one
 * born in between counts from zero.
 */
export function cpuDeltaMs(before: CpuSnapshot, after: CpuSnapshot): number {
  let ticks = 0;
  for (const [key, end] of after) ticks += end - (before.get(key) ?? 0);
  return (ticks * 1000) / clockTicks();
}

/** Sum of VmRSS over the tree. Shared pages count once per process, so this errs high. */
export async function readTreeRssBytes(rootPid: number): Promise<number> {
  let kib = 0;
  for (const pid of await listProcessTree(rootPid)) {
    const text = await readOrNull(`/proc/${pid}/status`);
    const match = text === null ? null : /^VmRSS:\s+(\d+)\s+kB/m.exec(text);
    if (match !== null) kib += Number(match[1]);
  }
  return kib * 1024;
}

export interface RssSample {
  atMs: number;
  bytes: number;
}

/** Samples the RSS of a process tree on a fixed interval, bounded in count. */
export class RssSampler {
  private readonly samples: RssSample[] = [];
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(
    private readonly rootPid: number,
    private readonly intervalMs = 1000,
    private readonly maxSamples = 100_000,
  ) {}

  start(): void {
    this.tick();
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Takes one reading now (also recorded); null when the tree is gone. */
  async sample(): Promise<RssSample | null> {
    const bytes = await readTreeRssBytes(this.rootPid);
    if (bytes === 0) return null;
    const sample = { atMs: Date.now(), bytes };
    if (this.samples.length < this.maxSamples) this.samples.push(sample);
    return sample;
  }

  private tick(): void {
    // a slow /proc walk must not stack up readings
    if (this.busy) return;
    this.busy = true;
    void this.sample()
      .catch(() => null)
      .finally(() => {
        this.busy = false;
      });
  }

  /** Samples taken at or after `sinceMs` (all when omitted). */
  since(sinceMs = 0): RssSample[] {
    return this.samples.filter((s) => s.atMs >= sinceMs);
  }
}
