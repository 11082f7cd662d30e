import type { LimitSnapshot } from '../providers';

/** What to tell the limiter about one response's rate-limit headers. */
export interface LimitReport {
  /** The key's limit and its window, when new or longer than last said. */
  readonly learnedLimit: { readonly requests: number; readonly perMs: number } | undefined;
  readonly remainingRequests: number | undefined;
}

interface KeyKnowledge {
  /** 0 while the provider has stated no limit (Azure states none). */
  requests: number;
  perMs: number;
  lastReportMs: number;
}

/** Remaining counts are worth a call only near the end of a window, where over-sending earns a 429. */
const REPORT_REMAINING_BELOW_SHARE = 0.25;
/** At most this many remaining-count reports per key per window, so a busy key costs a few calls, not one per request. */
const REMAINING_REPORTS_PER_WINDOW = 20;
/** Between remaining-count reports for a key whose limit is unknown. */
const UNKNOWN_LIMIT_REPORT_INTERVAL_MS = 1_000;
/** A window estimate must grow by more than this share to be said again. */
const WINDOW_GROWTH_TO_REPORT = 0.01;

/**
 * Decides which responses' rate-limit headers the limiter needs to hear, so
 * the router pays a ReportOutcome call only when the limiter would learn
 * something: a key's limit the first time (or when it changes), and the
 * provider's remaining count near the end of a window.
 *
 * The window is estimated as the longest reset seen for the same request
 * count: a reset (time until the window is whole again) is never longer than
 * the window, and right after a key's first request in a fresh window it is
 * the window itself. A provider whose reset is a token bucket's refill time
 * makes this an underestimate; the remaining counts and the 429 cooling then
 * correct it.
 */
export class LimitLearner {
  private readonly keys = new Map<string, KeyKnowledge>();
  private readonly shortestByPool = new Map<string, number>();

  /** The shortest window learned for any key of the pool; Infinity when none. */
  shortestWindowMs(poolId: string): number {
    return this.shortestByPool.get(poolId) ?? Number.POSITIVE_INFINITY;
  }

  observe(poolId: string, keyId: string, snapshot: LimitSnapshot, nowMs: number): LimitReport | undefined {
    const { limitRequests, remainingRequests, requestsResetAtMs } = snapshot;
    const id = `${poolId}\u0000${keyId}`;
    let known = this.keys.get(id);
    let learnedLimit: LimitReport['learnedLimit'];
    if (limitRequests !== undefined && limitRequests > 0 && requestsResetAtMs !== undefined && requestsResetAtMs > nowMs) {
      const resetMs = requestsResetAtMs - nowMs;
      if (known === undefined || known.requests !== limitRequests || resetMs > known.perMs * (1 + WINDOW_GROWTH_TO_REPORT)) {
        const perMs = known !== undefined && known.requests === limitRequests ? Math.max(known.perMs, resetMs) : resetMs;
        known = { requests: limitRequests, perMs, lastReportMs: nowMs };
        this.keys.set(id, known);
        this.shortestByPool.set(poolId, Math.min(this.shortestWindowMs(poolId), perMs));
        learnedLimit = { requests: limitRequests, perMs };
      }
    }
    if (learnedLimit !== undefined) return { learnedLimit, remainingRequests };
    if (remainingRequests === undefined) return undefined;
    // Nothing left: always said (it comes with the cooling report anyway), never throttled.
    if (remainingRequests === 0) return { learnedLimit: undefined, remainingRequests };
    if (known !== undefined && known.requests > 0 && remainingRequests > known.requests * REPORT_REMAINING_BELOW_SHARE) return undefined;
    if (known === undefined) {
      this.keys.set(id, { requests: 0, perMs: UNKNOWN_LIMIT_REPORT_INTERVAL_MS * REMAINING_REPORTS_PER_WINDOW, lastReportMs: nowMs });
    } else {
      const intervalMs = known.requests > 0 ? known.perMs / REMAINING_REPORTS_PER_WINDOW : UNKNOWN_LIMIT_REPORT_INTERVAL_MS;
      if (nowMs - known.lastReportMs < intervalMs) return undefined;
      known.lastReportMs = nowMs;
    }
    return { learnedLimit: undefined, remainingRequests };
  }

  /** A new policy may have replaced keys: learn afresh. */
  reset(): void {
    this.keys.clear();
    this.shortestByPool.clear();
  }
}
