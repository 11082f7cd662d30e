import type { Policy, PolicyKey, PolicyProvider, PolicyRoute } from '@keymesh/config';
import { loadTokenizer } from '../admission/token-estimate';
import { adapterFor, type ProviderAdapter } from '../providers';
import { Upstream } from '../providers/upstream';
import { buildScopeTable, EMPTY_SCOPE_TABLE, gateMapsOf, type ScopeTable } from '../admission/scope-admission';

export interface ProviderBinding {
  readonly id: string;
  readonly adapter: ProviderAdapter;
  readonly upstream: Upstream;
  readonly timeoutMs: number;
}

/**
 * Everything the hot path looks up, built once per policy version: no
 * per-request parsing of policy, no per-request allocation of lookups.
 */
export interface RouteTable {
  readonly version: bigint;
  readonly routes: ReadonlyMap<string, PolicyRoute>;
  /** sha256(virtual key) → tenant id. */
  readonly tenantByKeyHash: ReadonlyMap<string, string>;
  readonly providers: ReadonlyMap<string, ProviderBinding>;
  /** The /v1/models body, ready to send. */
  readonly modelsBody: Buffer;
  /** How long leases on each pool should last (see leaseHoldOf). */
  readonly leaseHoldMs: ReadonlyMap<string, number>;
  /**
   * Pools with a key that has token limits: their requests are estimated, and
   * admitted from a lease's token budget or with a reservation of their own.
   */
  readonly tokenLimitedPools: ReadonlySet<string>;
  /** Tenants, routes and pool totals with limits of their own (admitted like keys, on pools of their own). */
  readonly scopes: ScopeTable;
  /**
   * Pools with a key that has a concurrency limit: their requests are
   * admitted per request (never from a lease) and hold their key's slot
   * until they end (see HoldKeeper).
   */
  readonly heldPools: ReadonlySet<string>;
}

export const EMPTY_ROUTE_TABLE: RouteTable = {
  version: 0n,
  routes: new Map(),
  tenantByKeyHash: new Map(),
  providers: new Map(),
  modelsBody: Buffer.from(JSON.stringify({ object: 'list', data: [] })),
  leaseHoldMs: new Map(),
  tokenLimitedPools: new Set(),
  scopes: EMPTY_SCOPE_TABLE,
  heldPools: new Set(),
};

const MAX_LEASE_HOLD_MS = 1_000;
const MIN_LEASE_HOLD_MS = 20;

/**
 * A leased slot counts in its key's windows until the lease ends, so a hold
 * long beside a window wastes capacity: a 1 s hold on a 2 s window would cost
 * a third of it. Holds are a twentieth of the pool's shortest window (at most
 * 1 s, at least 20 ms), which keeps that cost near 5%.
 */
/** Token windows and token quotas both need each request's estimate reserved. */
function hasTokenLimit(key: PolicyKey | undefined): boolean {
  return key !== undefined && (key.tokenLimits.length > 0 || key.quotas.some((q) => q.unit === 'tokens'));
}

function hasTokenLimitedScope(scopes: ScopeTable): boolean {
  // A cost gate counts the prompt's tokens too (its estimate prices them).
  return gateMapsOf(scopes).some((gates) => [...gates.values()].some((gate) => gate.tokenLimited));
}

export function leaseHoldOf(policy: Policy, poolId: string): number {
  let shortestMs = Number.POSITIVE_INFINITY;
  for (const keyId of policy.pools[poolId]?.keyIds ?? []) {
    for (const limit of policy.keys[keyId]?.limits ?? []) shortestMs = Math.min(shortestMs, limit.perMs);
  }
  return leaseHoldForWindow(shortestMs);
}

/** The hold for a pool whose shortest window is shortestMs (Infinity: none known). */
export function leaseHoldForWindow(shortestMs: number): number {
  return Math.max(MIN_LEASE_HOLD_MS, Math.min(MAX_LEASE_HOLD_MS, Math.floor(shortestMs / 20)));
}

/** Builds the next table, reusing connection pools of providers whose URL did not change. */
export function buildRouteTable(policy: Policy, version: bigint, previous: RouteTable): { table: RouteTable; retired: Upstream[] } {
  const providers = new Map<string, ProviderBinding>();
  const reused = new Set<Upstream>();
  for (const provider of Object.values(policy.providers) as PolicyProvider[]) {
    const old = previous.providers.get(provider.id);
    const upstream = old && old.upstream.baseUrl === provider.baseUrl ? old.upstream : new Upstream(provider.baseUrl);
    reused.add(upstream);
    providers.set(provider.id, { id: provider.id, adapter: adapterFor(provider.kind), upstream, timeoutMs: provider.timeoutMs });
  }
  const retired = [...previous.providers.values()].map((p) => p.upstream).filter((u) => !reused.has(u));

  const tenantByKeyHash = new Map<string, string>();
  for (const tenant of Object.values(policy.tenants)) {
    for (const hash of tenant.virtualKeySha256) tenantByKeyHash.set(hash, tenant.id);
  }
  const routes = new Map<string, PolicyRoute>(Object.values(policy.routes).map((r) => [r.alias, r]));
  const created = Math.floor(Date.now() / 1000);
  const modelsBody = Buffer.from(
    JSON.stringify({
      object: 'list',
      data: [...routes.keys()].map((id) => ({ id, object: 'model', created, owned_by: 'keymesh' })),
    }),
  );
  const leaseHoldMs = new Map(Object.keys(policy.pools).map((poolId) => [poolId, leaseHoldOf(policy, poolId)]));
  const scopes = buildScopeTable(policy);
  for (const gates of gateMapsOf(scopes)) {
    for (const gate of gates.values()) leaseHoldMs.set(gate.poolId, leaseHoldForWindow(gate.shortestWindowMs));
  }
  const tokenLimitedPools = new Set(
    Object.values(policy.pools)
      .filter((pool) => pool.keyIds.some((keyId) => hasTokenLimit(policy.keys[keyId])))
      .map((pool) => pool.id),
  );
  if (tokenLimitedPools.size > 0 || hasTokenLimitedScope(scopes)) loadTokenizer();
  const heldPools = new Set(Object.values(policy.pools).filter((pool) => pool.keyIds.some((keyId) => (policy.keys[keyId]?.concurrency ?? null) !== null)).map((pool) => pool.id));
  return { table: { version, routes, tenantByKeyHash, providers, modelsBody, leaseHoldMs, tokenLimitedPools, scopes, heldPools }, retired };
}
