import type { Policy, PolicyRoute } from '@keymesh/config';
import { Code, KeymeshError } from '@keymesh/errors';

/** Reasons the guards answer with; libs/errors has no constant for them (yet). */
export const GuardReason = {
  CONCURRENCY_LIMIT: 'CONCURRENCY_LIMIT',
  IDEMPOTENCY_KEY_REUSED: 'IDEMPOTENCY_KEY_REUSED',
} as const;

/** A bulkhead rejection is over when any one request finishes; a second is a fair guess. */
const CONCURRENCY_RETRY_AFTER_MS = 1_000;

/** Gives a slot back. Safe to call more than once: only the first call counts. */
export type ReleaseSlot = () => void;

const NO_SLOT: ReleaseSlot = () => {};

/**
 * Bulkheads: caps on requests in flight per route alias and per tenant, on
 * this router. Counters are keyed by name and outlive policy versions, so a
 * reload neither forgets the requests in flight nor lets a flood double up.
 */
export class ConcurrencyGuard {
  private readonly inFlightByRoute = new Map<string, number>();
  private readonly inFlightByTenant = new Map<string, number>();
  private tenantCaps: ReadonlyMap<string, number> = new Map();

  /** Takes the tenant caps of a new policy; route caps travel on each PolicyRoute. */
  apply(policy: Policy): void {
    const caps = new Map<string, number>();
    for (const tenant of Object.values(policy.tenants)) {
      if (tenant.maxConcurrency !== null) caps.set(tenant.id, tenant.maxConcurrency);
    }
    this.tenantCaps = caps;
  }

  /**
   * Takes a slot on the route and the tenant, or throws 429 CONCURRENCY_LIMIT
   * without taking either. Uncapped routes and tenants cost one Map lookup.
   */
  acquire(route: PolicyRoute, tenantId: string): ReleaseSlot {
    const routeCap = route.maxConcurrency;
    const tenantCap = this.tenantCaps.get(tenantId);
    if (routeCap === null && tenantCap === undefined) return NO_SLOT;
    const routeCount = routeCap === null ? 0 : (this.inFlightByRoute.get(route.alias) ?? 0);
    if (routeCap !== null && routeCount >= routeCap) {
      throw overCap(`route ${JSON.stringify(route.alias)} has ${routeCap} requests in flight, its max_concurrency`, { route: route.alias });
    }
    const tenantCount = tenantCap === undefined ? 0 : (this.inFlightByTenant.get(tenantId) ?? 0);
    if (tenantCap !== undefined && tenantCount >= tenantCap) {
      throw overCap(`your tenant has ${tenantCap} requests in flight, its max_concurrency`, {});
    }
    // The slot remembers what it took: a reload that adds or drops a cap meanwhile must not skew the counts.
    const alias = routeCap === null ? undefined : route.alias;
    const tenant = tenantCap === undefined ? undefined : tenantId;
    if (alias !== undefined) this.inFlightByRoute.set(alias, routeCount + 1);
    if (tenant !== undefined) this.inFlightByTenant.set(tenant, tenantCount + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (alias !== undefined) decrement(this.inFlightByRoute, alias);
      if (tenant !== undefined) decrement(this.inFlightByTenant, tenant);
    };
  }

  /** Tenants with a cap in the current policy, so metrics can report an idle one as 0. */
  cappedTenants(): Iterable<string> {
    return this.tenantCaps.keys();
  }

  /** Requests in flight that count against caps, for tests and metrics. */
  inFlight(): { routes: ReadonlyMap<string, number>; tenants: ReadonlyMap<string, number> } {
    return { routes: this.inFlightByRoute, tenants: this.inFlightByTenant };
  }
}

// Deleting at zero keeps the maps as small as the set of busy names.
function decrement(counts: Map<string, number>, name: string): void {
  const count = (counts.get(name) ?? 0) - 1;
  if (count > 0) counts.set(name, count);
  else counts.delete(name);
}

function overCap(what: string, metadata: Record<string, string>): KeymeshError {
  return new KeymeshError({
    code: Code.ResourceExhausted,
    reason: GuardReason.CONCURRENCY_LIMIT,
    message: `Too many concurrent requests: ${what}. Retry after a request finishes.`,
    retryAfterMs: CONCURRENCY_RETRY_AFTER_MS,
    metadata,
  });
}
