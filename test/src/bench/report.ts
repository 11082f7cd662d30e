/** Turns raw samples into numbers and numbers into plain-text tables. Never asserts. */

export type Target = "direct" | "keymesh";

/** What one target did over all its segments of a scenario. */
export interface TargetTotals {
  ok: number;
  errors: number;
  dropped: number;
  firstError: string | null;
  measuredMs: number;
  latencyMs: Float64Array;
  ttfbMs: Float64Array;
  keymeshCpuMs: number;
  mockCpuMs: number;
  clientCpuMs: number;
}

export interface TargetStats {
  target: Target;
  ok: number;
  errors: number;
  dropped: number;
  firstError: string | null;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  ttfbP50Ms: number;
  ttfbP99Ms: number;
  /** CPU of keymesh's process tree per completed request (ok or not). */
  keymeshCpuMsPerRequest: number;
  mockCpuMsPerRequest: number;
  clientCpuMsPerRequest: number;
}

export interface ScenarioReport {
  name: string;
  title: string;
  stream: boolean;
  direct: TargetStats;
  keymesh: TargetStats;
  /** keymesh requests/s as a percentage of direct. */
  throughputPct: number;
  addedP50Ms: number;
  addedP99Ms: number;
  addedTtfbP50Ms: number;
  addedTtfbP99Ms: number;
}

/** Nearest-rank percentile of an ascending array; NaN when empty. */
export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Where a target's latencies fall, for BENCH_TAILS=1: a p99 alone cannot tell a slow path from a few stalls. */
export function tailLine(target: Target, latencyMs: Float64Array): string {
  const sorted = latencyMs.slice().sort();
  const bounds = [1, 2, 5, 10, 20, 50, 100];
  const counts = new Array<number>(bounds.length + 1).fill(0);
  for (const ms of sorted) {
    const bucket = bounds.findIndex((b) => ms < b);
    counts[bucket === -1 ? bounds.length : bucket]++;
  }
  const quantiles = [0.9, 0.99, 0.999].map((q) => `p${q * 100} ${percentile(sorted, q).toFixed(2)}`).join("  ");
  const histogram = counts.map((n, i) => `${i < bounds.length ? `<${bounds[i]}` : `>=${bounds[bounds.length - 1]}`} ms: ${n}`).join(", ");
  return `${target}: ${quantiles}  max ${(sorted[sorted.length - 1] ?? NaN).toFixed(2)}  (${histogram})`;
}

export function concatSamples(parts: readonly Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function summarizeTarget(target: Target, totals: TargetTotals): TargetStats {
  // TypedArray#sort is numeric, unlike Array#sort
  const latency = totals.latencyMs.slice().sort();
  const ttfb = totals.ttfbMs.slice().sort();
  const completed = totals.ok + totals.errors;
  const perRequest = (cpuMs: number): number => (completed === 0 ? NaN : cpuMs / completed);
  return {
    target,
    ok: totals.ok,
    errors: totals.errors,
    dropped: totals.dropped,
    firstError: totals.firstError,
    requestsPerSecond: totals.measuredMs > 0 ? (totals.ok * 1000) / totals.measuredMs : 0,
    p50Ms: percentile(latency, 0.5),
    p99Ms: percentile(latency, 0.99),
    ttfbP50Ms: percentile(ttfb, 0.5),
    ttfbP99Ms: percentile(ttfb, 0.99),
    keymeshCpuMsPerRequest: perRequest(totals.keymeshCpuMs),
    mockCpuMsPerRequest: perRequest(totals.mockCpuMs),
    clientCpuMsPerRequest: perRequest(totals.clientCpuMs),
  };
}

export function compareTargets(
  scenario: { name: string; title: string; stream: boolean },
  direct: TargetStats,
  keymesh: TargetStats,
): ScenarioReport {
  return {
    ...scenario,
    direct,
    keymesh,
    throughputPct: direct.requestsPerSecond > 0 ? (100 * keymesh.requestsPerSecond) / direct.requestsPerSecond : NaN,
    addedP50Ms: keymesh.p50Ms - direct.p50Ms,
    addedP99Ms: keymesh.p99Ms - direct.p99Ms,
    addedTtfbP50Ms: keymesh.ttfbP50Ms - direct.ttfbP50Ms,
    addedTtfbP99Ms: keymesh.ttfbP99Ms - direct.ttfbP99Ms,
  };
}

export function fmtMs(ms: number): string {
  return Number.isFinite(ms) ? ms.toFixed(2) : "-";
}

export function fmtSignedMs(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  return `${ms >= 0 ? "+" : ""}${ms.toFixed(2)}`;
}

export function fmtPct(pct: number): string {
  return Number.isFinite(pct) ? `${pct.toFixed(1)}%` : "-";
}

export function fmtMB(bytes: number): string {
  return Number.isFinite(bytes) ? `${(bytes / 1e6).toFixed(1)} MB` : "-";
}

export function fmtRate(rps: number): string {
  return Number.isFinite(rps) ? rps.toFixed(0) : "-";
}

function fmtErrors(stats: TargetStats): string {
  return stats.dropped > 0 ? `${stats.errors} (+${stats.dropped} dropped)` : String(stats.errors);
}

/** Left-aligned first column, right-aligned numbers. */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function truncate(text: string, max: number): string {
  const oneLine = text.replace(/\s+/g, " ").trim();
  return oneLine.length > max ? `${oneLine.slice(0, max)}…` : oneLine;
}

export function renderScenario(report: ScenarioReport): string {
  const { direct, keymesh, stream } = report;
  const headers = ["target", "req/s", "p50 ms", "p99 ms"];
  if (stream) headers.push("ttfb p50", "ttfb p99");
  headers.push("errors", "req/s vs direct", "+p50", "+p99");
  if (stream) headers.push("+ttfb p50", "+ttfb p99");
  headers.push("keymesh cpu ms/req", "mock cpu ms/req", "cores busy: keymesh / all");

  const row = (s: TargetStats, isKeymesh: boolean): string[] => {
    const cells = [s.target, fmtRate(s.requestsPerSecond), fmtMs(s.p50Ms), fmtMs(s.p99Ms)];
    if (stream) cells.push(fmtMs(s.ttfbP50Ms), fmtMs(s.ttfbP99Ms));
    cells.push(fmtErrors(s));
    if (isKeymesh) {
      cells.push(fmtPct(report.throughputPct), fmtSignedMs(report.addedP50Ms), fmtSignedMs(report.addedP99Ms));
      if (stream) cells.push(fmtSignedMs(report.addedTtfbP50Ms), fmtSignedMs(report.addedTtfbP99Ms));
      cells.push(fmtMs(s.keymeshCpuMsPerRequest));
    } else {
      cells.push("", "", "");
      if (stream) cells.push("", "");
      cells.push("");
    }
    cells.push(fmtMs(s.mockCpuMsPerRequest));
    // How loaded the machine was: the light rates are meant to leave the CPU unsaturated.
    const cores = (cpuMsPerRequest: number): string => (Number.isFinite(cpuMsPerRequest) ? ((cpuMsPerRequest * s.requestsPerSecond) / 1000).toFixed(2) : "n/a");
    const all = (isKeymesh ? s.keymeshCpuMsPerRequest : 0) + s.mockCpuMsPerRequest + s.clientCpuMsPerRequest;
    cells.push(`${isKeymesh ? cores(s.keymeshCpuMsPerRequest) : "-"} / ${cores(all)}`);
    return cells;
  };

  const out = [`== ${report.name}: ${report.title}`, renderTable(headers, [row(direct, false), row(keymesh, true)])];
  for (const s of [direct, keymesh]) {
    if (s.firstError !== null) out.push(`first error (${s.target}): ${truncate(s.firstError, 400)}`);
  }
  return out.join("\n");
}

export interface MemoryReport {
  /** Before any load. */
  idleBytes: number;
  /** First sample after the first keymesh warm-up, and the last one. */
  firstBytes: number;
  lastBytes: number;
  peakBytes: number;
  growthPct: number;
  samples: number;
}

export function summarizeMemory(
  idleBytes: number,
  samples: readonly { atMs: number; bytes: number }[],
  loadStartMs: number,
): MemoryReport {
  const ordered = [...samples].sort((a, b) => a.atMs - b.atMs);
  const underLoad = ordered.filter((s) => s.atMs >= loadStartMs);
  const firstBytes = underLoad[0]?.bytes ?? NaN;
  const lastBytes = underLoad[underLoad.length - 1]?.bytes ?? NaN;
  return {
    idleBytes,
    firstBytes,
    lastBytes,
    peakBytes: ordered.reduce((peak, s) => Math.max(peak, s.bytes), idleBytes),
    growthPct: (100 * (lastBytes - firstBytes)) / firstBytes,
    samples: ordered.length,
  };
}

export function renderMemory(memory: MemoryReport): string {
  return [
    "== memory: RSS of keymesh's process tree (sampled every second)",
    renderTable(
      ["idle", "first (after warm-up)", "last", "growth", "peak", "samples"],
      [[
        fmtMB(memory.idleBytes), fmtMB(memory.firstBytes), fmtMB(memory.lastBytes),
        fmtPct(memory.growthPct), fmtMB(memory.peakBytes), String(memory.samples),
      ]],
    ),
  ].join("\n");
}

export interface Check {
  label: string;
  measured: string;
  target: string;
  /** null: not measured in this run. */
  pass: boolean | null;
}

export function check(label: string, value: number, target: string, pass: (v: number) => boolean, fmt: (v: number) => string): Check {
  if (!Number.isFinite(value)) return { label, measured: "n/a", target, pass: null };
  return { label, measured: fmt(value), target, pass: pass(value) };
}

export function renderSummary(title: string, checks: readonly Check[]): string {
  const rows = checks.map((c) => [c.label, c.measured, c.target, c.pass === null ? "n/a" : c.pass ? "PASS" : "MISS"]);
  return [`== ${title} (informational; the bench never fails on these)`, renderTable(["target", "measured", "goal", ""], rows)].join("\n");
}

/** A line for the summary that has no goal to meet: shown, never PASS or MISS. */
export function info(label: string, measured: string): Check {
  return { label, measured, target: "no goal", pass: null };
}
