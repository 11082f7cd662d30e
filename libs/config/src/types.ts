/** A window the limiter enforces: at most `requests` admissions in any interval of `perMs`. */
export interface WindowLimit {
  readonly requests: number;
  /** Whole ms for declared windows; a `burst` window's per × B / N may have a fraction. */
  readonly perMs: number;
  /** Derived from a limit's `burst: B`: at most B in any per × B / N. Absent on declared windows. */
  readonly burst?: true;
}

/** A token window: at most `tokens` tokens over the requests of any interval of `perMs`. */
export interface TokenWindowLimit {
  readonly tokens: number;
  readonly perMs: number;
}

/**
 * A calendar quota: at most `limit` requests (or tokens, or micro-USD of
 * cost) admitted within each day or month of `timeZone` (IANA), resetting at
 * that zone's midnight. Cost quotas belong to tenants, routes and pool totals.
 */
export interface CalendarQuota {
  readonly unit: 'requests' | 'tokens' | 'cost';
  readonly limit: number;
  readonly period: 'day' | 'month';
  readonly timeZone: string;
}

/** A provider key's quotas: requests or tokens (cost quotas belong to tenants, routes and pool totals). */
export type KeyQuota = CalendarQuota & { readonly unit: 'requests' | 'tokens' };

/**
 * One `limits` block, normalized: its windows, token windows and calendar
 * quotas. Keys carry theirs as separate fields; tenants, routes and pool
 * totals carry the set (null when they declare none).
 */
export interface LimitSet {
  readonly requests: WindowLimit[];
  readonly tokens: TokenWindowLimit[];
  readonly quotas: CalendarQuota[];
}

/** Where a provider key's secret comes from, as the config file says it. */
export type ConfigSecret = { readonly kind: 'literal'; readonly value: string } | { readonly kind: 'env'; readonly name: string };

export type DeepReadonly<T> = T extends (infer U)[]
  ? readonly DeepReadonly<U>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;
