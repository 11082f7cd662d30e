/**
 * Tenants, routes and pool totals that declare limits are enforced by the
 * limiter as pools of their own, each holding one key: they get the windows,
 * token windows, calendar quotas, leases, stores and failure modes provider
 * keys have, with no second implementation. Their pool ids contain "/", which
 * no configured id may (see ID_PATTERN), so they never collide with a real pool.
 */
import { formatDuration } from './duration';
import type { Policy } from './policy';
import type { LimitSet } from './types';

export type ScopeKind = 'tenant' | 'route' | 'pool';

/** The one key of every scope's pool. */
export const SCOPE_KEY_ID = 'total';

export interface LimitedScope {
  readonly kind: ScopeKind;
  /** The tenant id, route alias or pool id. */
  readonly id: string;
  /** Its pool in the limiter. */
  readonly poolId: string;
  readonly limits: LimitSet;
}

export function scopePoolId(kind: ScopeKind, id: string): string {
  return `${kind}/${id}`;
}

/** Every tenant, route and pool of the policy that declares limits: tenants first, then routes, then pools. */
export function limitedScopesOf(policy: Policy): LimitedScope[] {
  const scopes: LimitedScope[] = [];
  const add = (kind: ScopeKind, id: string, limits: LimitSet | null): void => {
    if (limits !== null) scopes.push({ kind, id, poolId: scopePoolId(kind, id), limits });
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
    ...limits.quotas.map((q) => `${q.limit} ${q.unit} per ${q.period} (${q.timeZone})`),
  ].join(', ');
}
