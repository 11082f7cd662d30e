import { RecentIds } from './recent-ids';
import { UsageTotals } from './totals';
import type { UsageRecord } from './types';

/** How many request ids are remembered for de-duplication by default. */
export const DEFAULT_REMEMBERED_REQUEST_IDS = 100_000;

export interface UsageGroup {
  /** The tenant id, model, key id or route. */
  readonly name: string;
  readonly totals: UsageTotals;
}

/** Totals with their breakdowns; groups sorted by name. A snapshot: later records don't change it. */
export interface UsageReport {
  readonly totals: UsageTotals;
  readonly tenants: UsageGroup[];
  readonly models: UsageGroup[];
  readonly keys: UsageGroup[];
  readonly routes: UsageGroup[];
}

/** One tenant's sums, broken down by model, key and route so reports can be filtered to it. */
class TenantUsage {
  readonly totals = new UsageTotals();
  readonly models = new Map<string, UsageTotals>();
  readonly keys = new Map<string, UsageTotals>();
  readonly routes = new Map<string, UsageTotals>();
}

export interface UsageAggregatorOptions {
  rememberedRequestIds?: number;
}

/**
 * Sums usage per tenant, and within each tenant per model, key and route.
 * Recording touches only the event's tenant (four sums, four map lookups); overall
 * figures and cross-tenant model/key groups are merged when a report is asked
 * for, which is rare next to one record per gateway request. Tenants, models
 * and keys are bounded by the policy, so the maps are too.
 *
 * Events without a model or key id (answered from the cache, refused before a
 * key was chosen) count in the totals but in no model or key group; events
 * without a tenant likewise in no tenant group.
 */
export class UsageAggregator {
  private readonly tenants = new Map<string, TenantUsage>();
  private readonly recent: RecentIds;
  private duplicateCount = 0;

  constructor(options: UsageAggregatorOptions = {}) {
    this.recent = new RecentIds(options.rememberedRequestIds ?? DEFAULT_REMEMBERED_REQUEST_IDS);
  }

  /** Adds one event; false (and nothing added) when its request id was seen recently. */
  record(record: UsageRecord): boolean {
    // An event without a request id can't be de-duplicated; counting it beats dropping it.
    if (record.requestId !== '' && !this.recent.add(record.requestId)) {
      this.duplicateCount++;
      return false;
    }
    let tenant = this.tenants.get(record.tenantId);
    if (tenant === undefined) {
      tenant = new TenantUsage();
      this.tenants.set(record.tenantId, tenant);
    }
    tenant.totals.add(record);
    if (record.model !== '') totalsOf(tenant.models, record.model).add(record);
    if (record.keyId !== '') totalsOf(tenant.keys, record.keyId).add(record);
    if (record.route !== '') totalsOf(tenant.routes, record.route).add(record);
    return true;
  }

  /** Events dropped as redeliveries. */
  get duplicates(): number {
    return this.duplicateCount;
  }

  /** Everyone's usage, or only `tenantId`'s (its models and keys included) when given. */
  report(tenantId?: string): UsageReport {
    const selected: [string, TenantUsage][] = [];
    if (tenantId === undefined) {
      for (const entry of this.tenants) selected.push(entry);
    } else {
      const tenant = this.tenants.get(tenantId);
      if (tenant !== undefined) selected.push([tenantId, tenant]);
    }
    const totals = new UsageTotals();
    const tenants: UsageGroup[] = [];
    const models = new Map<string, UsageTotals>();
    const keys = new Map<string, UsageTotals>();
    const routes = new Map<string, UsageTotals>();
    for (const [name, tenant] of selected) {
      totals.merge(tenant.totals);
      if (name !== '') tenants.push({ name, totals: tenant.totals.copy() });
      for (const [model, sums] of tenant.models) totalsOf(models, model).merge(sums);
      for (const [keyId, sums] of tenant.keys) totalsOf(keys, keyId).merge(sums);
      for (const [route, sums] of tenant.routes) totalsOf(routes, route).merge(sums);
    }
    return { totals, tenants: tenants.sort(byName), models: groupsOf(models), keys: groupsOf(keys), routes: groupsOf(routes) };
  }
}

function totalsOf(groups: Map<string, UsageTotals>, name: string): UsageTotals {
  let totals = groups.get(name);
  if (totals === undefined) {
    totals = new UsageTotals();
    groups.set(name, totals);
  }
  return totals;
}

function groupsOf(groups: Map<string, UsageTotals>): UsageGroup[] {
  const list: UsageGroup[] = [];
  for (const [name, totals] of groups) list.push({ name, totals });
  return list.sort(byName);
}

function byName(a: UsageGroup, b: UsageGroup): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
