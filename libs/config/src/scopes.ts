/**
 * Tenants, routes and pool totals that declare limits are enforced by the
 * limiter as pools of their own, each holding one key: they get the windows,
 * token windows, calendar quotas, leases, stores and failure modes provider
 * keys have, with no second implementation. Their pool ids contain "/", which
 * no configured id may (see ID_PATTERN), so they never collide with a real pool.
 */
import { formatDuration } from './duration';
import type { Policy } from './policy';
import { formatUsd } from './price';
import type { CalendarQuota, LimitSet } from './types';

export const SCOPE_KINDS = ['tenant', 'route', 'pool'] as const;
export type ScopeKind = (typeof SCOPE_KINDS)[number];

/** The one key of every scope's pool. */
export const SCOPE_KEY_ID = 'total';

/**
 * What a scope's pool counts in its token windows and quotas: tokens, or
 * (for a scope's cost quotas) micro-USD.
 */
export type ScopeMeasure = 'tokens' | 'cost';

export interface LimitedScope {
  readonly kind: ScopeKind;
  /** The tenant id, route alias or pool id. */
  readonly id: string;
  /** Its pool in the limiter. */
  readonly poolId: string;
  readonly measure: ScopeMeasure;
  /** On a cost scope, only quotas of unit "cost". */
  readonly limits: LimitSet;
}

export function scopePoolId(kind: ScopeKind, id: string): string {
  return `${kind}/${id}`;
}

/**
 * A scope's cost quotas are a pool of their own: the limiter counts their
 * micro-USD as it counts a token quota's tokens (reserve the estimate, settle
 * to what was spent), and a request's cost and tokens are different amounts,
 * so they cannot share one pool's reservation.
 */
export function costScopePoolId(kind: ScopeKind, id: string): string {
  return `${kind}/${id}/cost`;
}

/** Whether a limiter pool is a scope's cost quotas (ids hold no "/", so only costScopePoolId makes "<kind>/<id>/cost"). */
export function isCostScopePoolId(poolId: string): boolean {
  return poolId.endsWith('/cost') && poolId.indexOf('/') < poolId.length - 5;
}

/** Every tenant, route and pool of the policy that declares limits: tenants first, then routes, then pools. */
export function limitedScopesOf(policy: Policy): LimitedScope[] {
  const scopes: LimitedScope[] = [];
  const add = (kind: ScopeKind, id: string, limits: LimitSet | null): void => {
    if (limits === null) return;
    const costQuotas = limits.quotas.filter((q) => q.unit === 'cost');
    const otherQuotas = costQuotas.length === 0 ? limits.quotas : limits.quotas.filter((q) => q.unit !== 'cost');
    if (limits.requests.length > 0 || limits.tokens.length > 0 || otherQuotas.length > 0) {
      scopes.push({ kind, id, poolId: scopePoolId(kind, id), measure: 'tokens', limits: { ...limits, quotas: otherQuotas } });
    }
    if (costQuotas.length > 0) {
      scopes.push({ kind, id, poolId: costScopePoolId(kind, id), measure: 'cost', limits: { requests: [], tokens: [], quotas: costQuotas } });
    }
  };
  for (const tenant of Object.values(policy.tenants)) add('tenant', tenant.id, tenant.limits);
  for (const route of Object.values(policy.routes)) add('route', route.alias, route.limits);
  for (const pool of Object.values(policy.pools)) add('pool', pool.id, pool.limits);
  return scopes;
}

/** The limits in words, for a caller's 429 ("5 requests per 2s, 10000 tokens per day (UTC)"); no secret is in them. */
export function describeLimitSet(limits: LimitSet): string {
  return [
    ...limits.requests.map((w) => `${w.requests} requests per ${formatDuration(w.perMs)}`),
    ...limits.tokens.map((w) => `${w.tokens} tokens per ${formatDuration(w.perMs)}`),
    ...limits.quotas.map((q) => (q.unit === 'cost' ? describeCostQuota(q) : `${q.limit} ${q.unit} per ${q.period} (${q.timeZone})`)),
  ].join(', ');
}

/** "monthly cost quota of $100 (Europe/Berlin)". */
function describeCostQuota(quota: CalendarQuota): string {
  return `${quota.period === 'day' ? 'daily' : 'monthly'} cost quota of ${formatUsd(quota.limit)} (${quota.timeZone})`;
}
