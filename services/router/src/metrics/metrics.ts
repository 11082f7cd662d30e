import type { BreakerBoard, BreakerState } from '../resilience';
import type { ConcurrencyGuard } from '../guards/concurrency';
import type { RouteTable } from '../routing/route-table';

/** Prometheus text exposition format 0.0.4, what `GET /metrics` answers with. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const BREAKER_STATE_VALUE: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 };

/** HTTP statuses are 100-599: one slot each, so counting a request is an index and an increment. */
const STATUS_MIN = 100;
const STATUS_SLOTS = 500;

/**
 * Requests answered at the HTTP edge, by route alias and status. Counts live
 * in one array per route (routes are few and named in config), so the hot
 * path pays one Map lookup and an increment, and allocates nothing once a
 * route has been seen.
 */
export class RequestCounter {
  private readonly byRoute = new Map<string, Float64Array>();

  /** `route` is '' for requests that never resolved one (unknown paths, bad auth). */
  count(route: string, status: number): void {
    let counts = this.byRoute.get(route);
    if (counts === undefined) {
      counts = new Float64Array(STATUS_SLOTS);
      this.byRoute.set(route, counts);
    }
    const slot = status - STATUS_MIN;
    if (slot >= 0 && slot < STATUS_SLOTS) counts[slot]++;
  }

  *entries(): Iterable<{ route: string; status: number; count: number }> {
    for (const [route, counts] of this.byRoute) {
      for (let slot = 0; slot < STATUS_SLOTS; slot++) if (counts[slot] > 0) yield { route, status: slot + STATUS_MIN, count: counts[slot] };
    }
  }
}

/** A key breaker knows its pool; its provider is the one the routes use the pool with. */
export function providersOfPools(table: RouteTable): Map<string, string> {
  const out = new Map<string, string>();
  for (const route of table.routes.values()) for (const t of route.targets) out.set(t.poolId, t.providerId);
  return out;
}

export interface RouterMetricsSources {
  table: () => RouteTable;
  breakers: BreakerBoard;
  concurrency: ConcurrencyGuard;
  requests: RequestCounter;
}

/**
 * Renders the router's state for a scrape. Labels carry ids from the config
 * (provider, pool, key id, route alias, tenant id), never a secret or a
 * virtual key; key ids are what `keymesh keys` prints too.
 */
export function renderMetrics(sources: RouterMetricsSources): string {
  const lines: string[] = [];
  const table = sources.table();

  const providerOfPool = providersOfPools(table);
  header(lines, 'keymesh_breaker_state', 'gauge', 'Circuit breaker state on this router: 0 closed, 1 half-open, 2 open.');
  for (const b of sources.breakers.snapshot(true)) {
    const provider = b.scope === 'provider' ? (b.providerId ?? '') : (providerOfPool.get(b.poolId ?? '') ?? '');
    lines.push(sample('keymesh_breaker_state', { scope: b.scope, provider, pool: b.poolId ?? '', key_id: b.keyId ?? '' }, BREAKER_STATE_VALUE[b.state]));
  }

  // Capped routes and tenants report 0 when idle, so "back to 0" is a value rather than a missing series.
  header(lines, 'keymesh_inflight_requests', 'gauge', 'Requests holding a bulkhead slot on this router, per capped route and tenant.');
  const { routes, tenants } = sources.concurrency.inFlight();
  const routeNames = new Set<string>(routes.keys());
  for (const route of table.routes.values()) if (route.maxConcurrency !== null) routeNames.add(route.alias);
  for (const name of routeNames) lines.push(sample('keymesh_inflight_requests', { scope: 'route', name }, routes.get(name) ?? 0));
  const tenantNames = new Set<string>(tenants.keys());
  for (const name of sources.concurrency.cappedTenants()) tenantNames.add(name);
  for (const name of tenantNames) lines.push(sample('keymesh_inflight_requests', { scope: 'tenant', name }, tenants.get(name) ?? 0));

  header(lines, 'keymesh_http_requests_total', 'counter', 'Requests answered at the HTTP edge, by route alias and status.');
  for (const { route, status, count } of sources.requests.entries()) {
    lines.push(sample('keymesh_http_requests_total', { route, status: String(status) }, count));
  }
  return lines.join('\n') + '\n';
}

function header(lines: string[], name: string, type: 'gauge' | 'counter', help: string): void {
  lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
}

function sample(name: string, labels: Record<string, string>, value: number): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return `${name}{${pairs.join(',')}} ${value}`;
}

// The exposition format escapes exactly these three in label values.
function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
