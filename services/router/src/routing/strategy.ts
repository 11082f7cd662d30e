import type { PolicyRoute, PolicyTarget } from '@keymesh/config';

/** What this router has seen of one target (a pool and a model), kept across requests and policy reloads. */
export interface TargetStats {
  /** Provider calls this router has open to the target right now. */
  inFlight: number;
  /** Moving average of the time to the provider's answer, in ms; NaN until the first sample. */
  ttfbEwmaMs: number;
}

/**
 * Weight of the newest sample: about the last ten calls count, so a target
 * that slows down loses its place within a few requests, yet one slow
 * answer does not reorder a route.
 */
const EWMA_ALPHA = 0.2;

/**
 * Stats per target. Targets are frozen objects that a policy reload replaces,
 * so stats are found by identity (a WeakMap hit, no string built per request)
 * and, for a target not seen since the reload, by pool and model, so its
 * history survives the reload.
 */
export class TargetBoard {
  private readonly byName = new Map<string, TargetStats>();
  private readonly byTarget = new WeakMap<PolicyTarget, TargetStats>();

  of(target: PolicyTarget): TargetStats {
    let stats = this.byTarget.get(target);
    if (stats !== undefined) return stats;
    const name = `${target.poolId}\u0000${target.model}`;
    stats = this.byName.get(name);
    if (stats === undefined) {
      stats = { inFlight: 0, ttfbEwmaMs: Number.NaN };
      this.byName.set(name, stats);
    }
    this.byTarget.set(target, stats);
    return stats;
  }

  /** A call to the target begins; `ended` must follow once it has its answer or failed. */
  began(stats: TargetStats): void {
    stats.inFlight++;
  }

  /** `ttfbMs` is undefined when the call taught nothing about the target's speed. */
  ended(stats: TargetStats, ttfbMs: number | undefined): void {
    stats.inFlight--;
    if (ttfbMs === undefined) return;
    stats.ttfbEwmaMs = Number.isNaN(stats.ttfbEwmaMs) ? ttfbMs : stats.ttfbEwmaMs + EWMA_ALPHA * (ttfbMs - stats.ttfbEwmaMs);
  }
}

/** Routes of `cost` order their targets once per policy version: prices only change with the policy. */
const byPrice = new WeakMap<PolicyRoute, readonly PolicyTarget[]>();

/**
 * The order in which one request tries the route's targets. Fallback and cost
 * return a shared array; the others build one small array per request.
 * `random` returns [0, 1), like Math.random.
 */
export function orderTargets(route: PolicyRoute, board: TargetBoard, random: () => number): readonly PolicyTarget[] {
  switch (route.strategy) {
    case 'fallback':
      return route.targets;
    case 'weighted':
      return weightedOrder(route.targets, random);
    case 'least-busy':
      return sortedBy(route.targets, (t) => board.of(t).inFlight);
    case 'latency':
      // Unmeasured targets first, so each gets a sample before the fastest takes everything.
      return sortedBy(route.targets, (t) => {
        const ms = board.of(t).ttfbEwmaMs;
        return Number.isNaN(ms) ? Number.NEGATIVE_INFINITY : ms;
      });
    case 'cost': {
      let ordered = byPrice.get(route);
      if (ordered === undefined) {
        ordered = sortedBy(route.targets, priceOf);
        byPrice.set(route, ordered);
      }
      return ordered;
    }
  }
}

/**
 * A request's estimated cost is not known to the router (it would need the
 * prompt's tokens), so targets compare by input plus output price per 1M
 * tokens: the cost of a request with as many tokens out as in.
 */
function priceOf(target: PolicyTarget): number {
  return target.price === null ? Number.POSITIVE_INFINITY : target.price.input + target.price.output;
}

/**
 * Weighted sampling without replacement: each position is drawn among the
 * targets not yet placed, in proportion to their weights. Quadratic in the
 * number of targets, which is a handful.
 */
function weightedOrder(targets: readonly PolicyTarget[], random: () => number): PolicyTarget[] {
  const out = targets.slice();
  for (let i = 0; i < out.length - 1; i++) {
    let total = 0;
    for (let j = i; j < out.length; j++) total += out[j]!.weight ?? 1;
    let draw = random() * total;
    let pick = out.length - 1;
    for (let j = i; j < out.length; j++) {
      draw -= out[j]!.weight ?? 1;
      if (draw < 0) {
        pick = j;
        break;
      }
    }
    const chosen = out[pick]!;
    // Shift rather than swap, so the targets not drawn keep their config order among themselves.
    for (let j = pick; j > i; j--) out[j] = out[j - 1]!;
    out[i] = chosen;
  }
  return out;
}

/** A stable insertion sort, ascending: ties keep config order, and a handful of targets needs nothing faster. */
function sortedBy(targets: readonly PolicyTarget[], key: (t: PolicyTarget) => number): PolicyTarget[] {
  const out = targets.slice();
  for (let i = 1; i < out.length; i++) {
    const target = out[i]!;
    const k = key(target);
    let j = i - 1;
    while (j >= 0 && key(out[j]!) > k) {
      out[j + 1] = out[j]!;
      j--;
    }
    out[j + 1] = target;
  }
  return out;
}
