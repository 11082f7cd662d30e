import { isKnownTimeZone } from './calendar';
import { KEY_SELECTIONS, MAX_KEY_CONCURRENCY } from '@keymesh/config';
import { DEFAULT_KEY_SELECTION } from './key-choice';
import type { CalendarQuota, PoolSpec, TokenWindowLimit, WindowLimit } from './types';

/**
 * A sliding log keeps one 8-byte slot per request of a window, so a window's
 * size is its memory: 1M requests = 8 MB per key. Larger quotas (daily,
 * monthly) belong to calendar quotas, not sliding logs.
 */
export const MAX_WINDOW_REQUESTS = 1_000_000;

/** Token windows store one entry per admission, not per token, so only sanity bounds them. */
export const MAX_WINDOW_TOKENS = 1_000_000_000_000;

/** Every problem in the specs, each named by its path; empty when valid. */
export function findPoolSpecProblems(pools: readonly PoolSpec[]): string[] {
  const problems: string[] = [];
  const poolIds = new Set<string>();
  pools.forEach((pool, p) => {
    const poolPath = `pools[${p}]`;
    if (!isNonEmptyString(pool.poolId)) problems.push(`${poolPath}.poolId: must be a non-empty string`);
    else if (poolIds.has(pool.poolId)) problems.push(`${poolPath}.poolId: duplicate pool "${pool.poolId}"`);
    else poolIds.add(pool.poolId);
    if (!Array.isArray(pool.keys)) {
      problems.push(`${poolPath}.keys: must be a list`);
      return;
    }
    const selection = pool.keySelection ?? DEFAULT_KEY_SELECTION;
    if (!KEY_SELECTIONS.includes(selection)) problems.push(`${poolPath}.keySelection: must be one of ${KEY_SELECTIONS.join(', ')}, got ${String(selection)}`);
    const reserve = pool.reserveForHigh ?? 0;
    if (typeof reserve !== 'number' || !(reserve >= 0 && reserve < 1)) problems.push(`${poolPath}.reserveForHigh: must be a number from 0 to below 1, got ${String(reserve)}`);
    const keyIds = new Set<string>();
    pool.keys.forEach((key, k) => {
      const keyPath = `${poolPath}.keys[${k}]`;
      if (!isNonEmptyString(key.keyId)) problems.push(`${keyPath}.keyId: must be a non-empty string`);
      else if (keyIds.has(key.keyId)) problems.push(`${keyPath}.keyId: duplicate key "${key.keyId}"`);
      else keyIds.add(key.keyId);
      if (selection === 'weighted' && !(typeof key.weight === 'number' && Number.isFinite(key.weight) && key.weight > 0)) {
        problems.push(`${keyPath}.weight: every key of a weighted pool needs a weight above 0, got ${String(key.weight)}`);
      }
      if (selection === 'cheapest' && !(typeof key.cost === 'number' && Number.isFinite(key.cost) && key.cost >= 0)) {
        problems.push(`${keyPath}.cost: every key of a cheapest pool needs a cost of 0 or more, got ${String(key.cost)}`);
      }
      const limits: readonly WindowLimit[] = key.limits;
      if (!Array.isArray(limits)) {
        problems.push(`${keyPath}.limits: must be a list`);
        return;
      }
      limits.forEach((limit, l) => {
        const limitPath = `${keyPath}.limits[${l}]`;
        if (!Number.isInteger(limit.requests) || limit.requests < 1 || limit.requests > MAX_WINDOW_REQUESTS) {
          problems.push(`${limitPath}.requests: must be an integer from 1 to ${MAX_WINDOW_REQUESTS}, got ${String(limit.requests)}`);
        }
        if (typeof limit.perMs !== 'number' || !Number.isFinite(limit.perMs) || limit.perMs <= 0) {
          problems.push(`${limitPath}.perMs: must be a positive number of ms, got ${String(limit.perMs)}`);
        }
      });
      const concurrency: number | undefined = key.concurrency;
      if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_KEY_CONCURRENCY)) {
        problems.push(`${keyPath}.concurrency: must be an integer from 1 to ${MAX_KEY_CONCURRENCY}, got ${String(concurrency)}`);
      }
      const quotas: readonly CalendarQuota[] | undefined = key.quotas;
      if (quotas !== undefined && !Array.isArray(quotas)) problems.push(`${keyPath}.quotas: must be a list`);
      else quotas?.forEach((quota, q) => problems.push(...findQuotaProblems(quota, `${keyPath}.quotas[${q}]`)));
      const tokenLimits: readonly TokenWindowLimit[] | undefined = key.tokenLimits;
      if (tokenLimits === undefined) return;
      if (!Array.isArray(tokenLimits)) {
        problems.push(`${keyPath}.tokenLimits: must be a list`);
        return;
      }
      tokenLimits.forEach((limit, l) => {
        const limitPath = `${keyPath}.tokenLimits[${l}]`;
        if (!Number.isInteger(limit.tokens) || limit.tokens < 1 || limit.tokens > MAX_WINDOW_TOKENS) {
          problems.push(`${limitPath}.tokens: must be an integer from 1 to ${MAX_WINDOW_TOKENS}, got ${String(limit.tokens)}`);
        }
        if (typeof limit.perMs !== 'number' || !Number.isFinite(limit.perMs) || limit.perMs <= 0) {
          problems.push(`${limitPath}.perMs: must be a positive number of ms, got ${String(limit.perMs)}`);
        }
      });
    });
  });
  return problems;
}

/** A deep, frozen copy: later edits to the caller's objects can't reach the limiter. */
export function freezePoolSpecs(pools: readonly PoolSpec[]): readonly PoolSpec[] {
  return Object.freeze(
    pools.map((pool) =>
      Object.freeze({
        poolId: pool.poolId,
        keySelection: pool.keySelection ?? DEFAULT_KEY_SELECTION,
        reserveForHigh: pool.reserveForHigh ?? 0,
        keys: Object.freeze(
          pool.keys.map((key) =>
            Object.freeze({
              keyId: key.keyId,
              ...(key.weight === undefined ? {} : { weight: key.weight }),
              ...(key.cost === undefined ? {} : { cost: key.cost }),
              limits: Object.freeze(
                key.limits.map((limit) => Object.freeze(limit.burst === true ? { requests: limit.requests, perMs: limit.perMs, burst: true } : { requests: limit.requests, perMs: limit.perMs })),
              ),
              tokenLimits: Object.freeze(
                (key.tokenLimits ?? []).map((limit) => Object.freeze({ tokens: limit.tokens, perMs: limit.perMs })),
              ),
              quotas: Object.freeze(
                (key.quotas ?? []).map((q) => Object.freeze({ unit: q.unit, limit: q.limit, period: q.period, timeZone: q.timeZone })),
              ),
              ...(key.concurrency === undefined ? {} : { concurrency: key.concurrency }),
            }),
          ),
        ),
      }),
    ),
  );
}

function findQuotaProblems(quota: CalendarQuota, path: string): string[] {
  const problems: string[] = [];
  if (quota.unit !== 'requests' && quota.unit !== 'tokens') problems.push(`${path}.unit: must be "requests" or "tokens", got ${String(quota.unit)}`);
  // Counters, not logs: only the wire's integers bound them.
  if (!Number.isSafeInteger(quota.limit) || quota.limit < 1) problems.push(`${path}.limit: must be a positive integer, got ${String(quota.limit)}`);
  if (quota.period !== 'day' && quota.period !== 'month') problems.push(`${path}.period: must be "day" or "month", got ${String(quota.period)}`);
  if (typeof quota.timeZone !== 'string' || !isKnownTimeZone(quota.timeZone)) {
    problems.push(`${path}.timeZone: must be an IANA time zone like "Europe/Berlin", got ${JSON.stringify(quota.timeZone)}`);
  }
  return problems;
}

function isNonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0;
}
