/**
 * The one schema for keymesh.yaml. Everything the rest of keymesh knows about
 * a config file's shape is derived from here: the snake_case file shape (strict
 * objects, so unknown keys are errors), the cross-references between sections,
 * and the transform to the camelCase, normalized `KeymeshConfig`.
 */
import { z } from 'zod';
import { closestName, formatPath, describeKind } from './config-error';
import { DURATION_EXAMPLES, formatDuration, parseDuration } from './duration';
import { hasOwn, isPlainRecord, toRecord } from './freeze';
import type { TokenPrice } from './price';
import type { CalendarQuota, ConfigSecret, DeepReadonly, LimitSet, TokenWindowLimit, WindowLimit } from './types';

type RawIssue = z.core.$ZodRawIssue;

/**
 * A schema-level error message: "missing" when absent, else "expected <what>"
 * (plus the kind it got, for type errors). Other issues (unknown keys, sizes)
 * fall through to describeIssue.
 */
export function expecting(what: string): (issue: RawIssue) => string | undefined {
  return (issue) => {
    switch (issue.code) {
      case 'invalid_type':
        if (issue.input === undefined) return `missing required field (expected ${what})`;
        return `expected ${what}, got ${describeKind(issue.input)}`;
      case 'invalid_value':
      case 'invalid_format':
        if (issue.input === undefined) return `missing required field (expected ${what})`;
        return `expected ${what}`;
      default:
        return undefined;
    }
  };
}

// ---- scalars -------------------------------------------------------------

export const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
const ID_WORDS = 'an id of 1-128 letters, digits, ".", "_", ":" or "-"';
export const idSchema = z.string({ error: expecting(ID_WORDS) }).regex(ID_PATTERN, { error: expecting(ID_WORDS) });

export const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
const envNameSchema = z
  .string({ error: expecting('an environment variable name like MOCK_KEY_1') })
  .regex(ENV_NAME_PATTERN, { error: expecting('an environment variable name like MOCK_KEY_1') });

/**
 * keymesh's own settings and secrets (the master key, the router token) live
 * in KEYMESH_* variables of the same processes: a provider key named after
 * one would hand it to whatever base_url the config names.
 */
export function isKeymeshVariable(name: string): boolean {
  return name.startsWith('KEYMESH_');
}

const providerKeyEnvSchema = envNameSchema.refine((name) => !isKeymeshVariable(name), {
  error: (issue) => `${JSON.stringify(issue.input)} is one of keymesh's own variables (KEYMESH_*); name the provider key's own variable`,
});

// Provider keys and virtual keys travel in HTTP headers, so anything outside
// visible ASCII would be mangled or rejected on the wire.
const HEADER_SAFE = /^[\x21-\x7e]+$/;
function headerTokenSchema(what: string) {
  return z
    .string({ error: expecting(`${what} (quote it if YAML reads it as a number)`) })
    .min(1, { error: 'must not be empty', abort: true })
    .regex(HEADER_SAFE, { error: `expected ${what} of visible ASCII characters without spaces (it is sent in an HTTP header)` });
}

/** At most this many admissions per window: the limiter keeps one log entry per admission. */
export const MAX_REQUESTS_PER_WINDOW = 1_000_000;
const windowCountSchema = z
  .int({ error: expecting('a whole number') })
  .min(1, { error: 'must be at least 1' })
  .max(MAX_REQUESTS_PER_WINDOW, {
    error: `must be at most ${MAX_REQUESTS_PER_WINDOW} per window (the limiter keeps one log entry per admission)`,
  });

/** Token windows are one log entry per request, not per token: only a sanity bound (and uint32 on the wire). */
export const MAX_TOKENS_PER_WINDOW = 4_000_000_000;
const tokenCountSchema = z
  .int({ error: expecting('a whole number of tokens') })
  .min(1, { error: 'must be at least 1' })
  .max(MAX_TOKENS_PER_WINDOW, { error: `must be at most ${MAX_TOKENS_PER_WINDOW} per window` });

/** What a request reserves for its completion when it names no max_tokens (see README, routes). */
export const DEFAULT_MAX_TOKENS = 1024;

const portSchema = z.int({ error: expecting('a port number') }).min(0, { error: 'expected a port from 0 to 65535' }).max(65535, {
  error: 'expected a port from 0 to 65535',
});

/** setTimeout fires at once for delays above 2^31-1 ms, so timer-backed durations stop there. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const DURATION_WORDS = `a duration like ${DURATION_EXAMPLES}`;

function durationSchema(options: { allowZero?: boolean; maxMs?: number; maxWhy?: string } = {}) {
  return z
    .string({
      error: (issue) =>
        typeof issue.input === 'number' ? `expected ${DURATION_WORDS}, got a number without a unit` : expecting(DURATION_WORDS)(issue),
    })
    .transform((text, ctx): number => {
      let ms: number;
      try {
        ms = parseDuration(text);
      } catch {
        ctx.addIssue({ code: 'custom', message: `expected ${DURATION_WORDS}`, input: text });
        return z.NEVER;
      }
      if (ms === 0 && !options.allowZero) {
        ctx.addIssue({ code: 'custom', message: 'must be greater than 0', input: text });
        return z.NEVER;
      }
      if (options.maxMs !== undefined && ms > options.maxMs) {
        ctx.addIssue({ code: 'custom', message: `must be at most ${formatDuration(options.maxMs)}${options.maxWhy ?? ''}`, input: text });
        return z.NEVER;
      }
      return ms;
    });
}

const timeoutSchema = durationSchema({ maxMs: MAX_TIMER_MS, maxWhy: ' (longer timers overflow in Node)' });

/** Remembered responses cost router memory for as long as they live. */
export const MAX_IDEMPOTENCY_TTL_MS = 86_400_000;

/** Each hold in flight is one entry the limiter scans or stores; the limiter checks against this same bound. */
export const MAX_KEY_CONCURRENCY = 100_000;

const keyConcurrencySchema = z
  .int({ error: expecting('a whole number of requests in flight at once on this key') })
  .min(1, { error: 'must be at least 1 (leave concurrency out for no cap)' })
  .max(MAX_KEY_CONCURRENCY, { error: `must be at most ${MAX_KEY_CONCURRENCY}` });

const maxConcurrencySchema = z
  .int({ error: expecting('a whole number of requests in flight at once') })
  .min(1, { error: 'must be at least 1 (leave max_concurrency out for no cap)' });

const httpUrlSchema = z.string({ error: expecting('an http(s) URL like "http://127.0.0.1:9000/v1"') }).transform((text, ctx): string => {
  const fail = (message: string): never => {
    ctx.addIssue({ code: 'custom', message, input: text });
    return z.NEVER as never;
  };
  const url = URL.canParse(text) ? new URL(text) : undefined;
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    return fail('expected an http(s) URL like "http://127.0.0.1:9000/v1"');
  }
  // Credentials here would end up in the policy every service fetches and in logs; keys belong in pools.
  if (url.username !== '' || url.password !== '') return fail('must not contain a user name or password (put keys in a pool)');
  if (url.search !== '' || url.hash !== '') return fail('must not have a query string or fragment');
  // Adapters append "/chat/completions" etc., so one canonical form without a trailing slash.
  return url.href.replace(/\/+$/, '');
});

/** Quotas are counters, not logs: only the wire's safe integers bound them. */
const quotaCountSchema = z
  .int({ error: expecting('a whole number') })
  .min(1, { error: 'must be at least 1' })
  .max(Number.MAX_SAFE_INTEGER, { error: `must be at most ${Number.MAX_SAFE_INTEGER}` });

const TIME_ZONE_WORDS = 'an IANA time zone like "Europe/Berlin" or "UTC"';
/** Checked with the same Intl the limiter computes midnights with, so a zone valid here works there. */
const timeZoneSchema = z.string({ error: expecting(TIME_ZONE_WORDS) }).refine(
  (name) => {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: name });
      return true;
    } catch {
      return false;
    }
  },
  { error: (issue) => `unknown time zone ${JSON.stringify(issue.input)} (expected ${TIME_ZONE_WORDS})` },
);

/** Cost quotas are kept in whole micro-USD (see costMicroUsd): the same counters as tokens. */
const quotaCostSchema = z
  .number({ error: expecting('an amount in USD, like 100 or 0.5') })
  .min(0.000001, { error: 'must be at least 0.000001 (one micro-USD)' })
  .max(Number.MAX_SAFE_INTEGER / 1e6, { error: `must be at most ${Math.floor(Number.MAX_SAFE_INTEGER / 1e6)}` })
  .transform((usd) => Math.round(usd * 1e6));

const quotaSchema = z
  .strictObject(
    {
      requests: quotaCountSchema.optional(),
      tokens: quotaCountSchema.optional(),
      cost: quotaCostSchema.optional(),
      per: z.enum(['day', 'month'], { error: expecting('"day" or "month"') }),
      time_zone: timeZoneSchema.default('UTC'),
    },
    { error: expecting('a mapping like { requests: 10000, per: day, time_zone: Europe/Berlin }') },
  )
  .superRefine(
    (value: unknown, ctx) => {
      if (isPlainRecord(value) && value['requests'] === undefined && value['tokens'] === undefined && value['cost'] === undefined) {
        ctx.addIssue({ code: 'custom', path: ['requests'], message: 'missing: a quota needs "requests", "tokens" or "cost" (e.g. requests: 10000, per: day)' });
      }
    },
    { when: () => true },
  );

// ---- sections ------------------------------------------------------------

const limitsSchema = z
  .strictObject(
    {
      rpm: windowCountSchema.optional(),
      tpm: tokenCountSchema.optional(),
      requests: windowCountSchema.optional(),
      tokens: tokenCountSchema.optional(),
      per: durationSchema().optional(),
      rpd: quotaCountSchema.optional(),
      tpd: quotaCountSchema.optional(),
      time_zone: timeZoneSchema.optional(),
      quota: quotaSchema.optional(),
      burst: windowCountSchema.optional(),
      concurrency: keyConcurrencySchema.optional(),
    },
    { error: expecting('a mapping like { rpm: 60, tpm: 90000, rpd: 10000, concurrency: 5 } or { requests: 5, tokens: 2000, per: 1s }') },
  )
  .superRefine(
    (value: unknown, ctx) => {
      if (!isPlainRecord(value)) return;
      const hasRequests = value['requests'] !== undefined;
      const hasTokens = value['tokens'] !== undefined;
      const hasPer = value['per'] !== undefined;
      if (hasRequests && !hasPer) {
        ctx.addIssue({ code: 'custom', path: ['per'], message: 'missing: "requests" needs "per" (e.g. requests: 5, per: 1s)' });
      }
      if (hasTokens && !hasPer) {
        ctx.addIssue({ code: 'custom', path: ['per'], message: 'missing: "tokens" needs "per" (e.g. tokens: 2000, per: 1s)' });
      }
      if (hasPer && !hasRequests && !hasTokens) {
        ctx.addIssue({ code: 'custom', path: ['requests'], message: 'missing: "per" needs "requests" or "tokens" (e.g. requests: 5, per: 1s)' });
      }
      const hasDaily = value['rpd'] !== undefined || value['tpd'] !== undefined;
      if (value['time_zone'] !== undefined && !hasDaily) {
        ctx.addIssue({ code: 'custom', path: ['time_zone'], message: 'applies to rpd and tpd only; give one, or set quota.time_zone' });
      }
      const burst = value['burst'];
      if (typeof burst === 'number') {
        const counts = [value['rpm'], value['requests']].filter((n): n is number => typeof n === 'number');
        if (counts.length === 0) ctx.addIssue({ code: 'custom', path: ['burst'], message: 'applies to request windows only; give rpm or requests with per' });
        else if (burst > Math.min(...counts)) ctx.addIssue({ code: 'custom', path: ['burst'], message: `must be at most the window's request count (${Math.min(...counts)}), got ${burst}` });
      }
      const declared = hasRequests || hasTokens || hasPer || hasDaily || value['quota'] !== undefined || value['rpm'] !== undefined || value['tpm'] !== undefined;
      if (!declared && value['concurrency'] === undefined) {
        ctx.addIssue({ code: 'custom', message: 'expected rpm, tpm, rpd, tpd, quota, concurrency, or requests/tokens with per (leave limits out for no limit)' });
      }
    },
    { when: () => true },
  )
  .transform((limits): { requests: WindowLimit[]; tokens: TokenWindowLimit[]; quotas: CalendarQuota[]; concurrency: number | null } => {
    const requests: WindowLimit[] = [];
    const tokens: TokenWindowLimit[] = [];
    const quotas: CalendarQuota[] = [];
    const dailyTimeZone = limits.time_zone ?? 'UTC';
    if (limits.rpd !== undefined) quotas.push({ unit: 'requests', limit: limits.rpd, period: 'day', timeZone: dailyTimeZone });
    if (limits.tpd !== undefined) quotas.push({ unit: 'tokens', limit: limits.tpd, period: 'day', timeZone: dailyTimeZone });
    const quota = limits.quota;
    if (quota?.requests !== undefined) quotas.push({ unit: 'requests', limit: quota.requests, period: quota.per, timeZone: quota.time_zone });
    if (quota?.tokens !== undefined) quotas.push({ unit: 'tokens', limit: quota.tokens, period: quota.per, timeZone: quota.time_zone });
    if (quota?.cost !== undefined) quotas.push({ unit: 'cost', limit: quota.cost, period: quota.per, timeZone: quota.time_zone });
    if (limits.rpm !== undefined) requests.push({ requests: limits.rpm, perMs: 60_000 });
    if (limits.requests !== undefined && limits.per !== undefined) requests.push({ requests: limits.requests, perMs: limits.per });
    if (limits.tpm !== undefined) tokens.push({ tokens: limits.tpm, perMs: 60_000 });
    if (limits.tokens !== undefined && limits.per !== undefined) tokens.push({ tokens: limits.tokens, perMs: limits.per });
    // At most B of N at once: B in any per × B / N keeps the window's average rate, and any burst of B fits it.
    const burst = limits.burst;
    if (burst !== undefined) for (const window of [...requests]) requests.push({ requests: burst, perMs: (window.perMs * burst) / window.requests, burst: true });
    return { requests, tokens, quotas, concurrency: limits.concurrency ?? null };
  });

const secretFields = {
  secret: headerTokenSchema('a key').optional(),
  secret_env: providerKeyEnvSchema.optional(),
};

/** A refinement for mappings that take exactly one of two alternative fields. */
function exactlyOneOf(first: string, second: string): (value: unknown, ctx: z.RefinementCtx) => void {
  return (value, ctx) => {
    if (!isPlainRecord(value)) return;
    const hasFirst = value[first] !== undefined;
    const hasSecond = value[second] !== undefined;
    if (hasFirst && hasSecond) ctx.addIssue({ code: 'custom', message: `set only one of "${first}" or "${second}"` });
    if (!hasFirst && !hasSecond) ctx.addIssue({ code: 'custom', message: `missing "${first}" or "${second}" (exactly one is required)` });
  };
}

/**
 * A tenant's, a route's or a pool total's limits: windows and quotas only.
 * A concurrency cap holds a provider key's slot until the request ends, which
 * only keys have; max_concurrency caps tenants and routes per router.
 */
const scopeLimitsSchema = limitsSchema
  .superRefine((limits, ctx) => {
    if (limits.concurrency !== null) {
      ctx.addIssue({ code: 'custom', path: ['concurrency'], message: 'applies to provider keys only (use max_concurrency on tenants and routes)' });
    }
  })
  .transform(({ requests, tokens, quotas }): LimitSet => ({ requests, tokens, quotas }));

const exactlyOneSecret = exactlyOneOf('secret', 'secret_env');

/**
 * A provider key's limits. A cost quota counts what keymesh's prices say a
 * tenant, route or pool spent; a key's own spend is its provider's quota
 * (quota_resets parks a key whose quota ran out).
 */
const keyLimitsSchema = limitsSchema.superRefine((limits, ctx) => {
  if (limits.quotas.some((q) => q.unit === 'cost')) {
    ctx.addIssue({ code: 'custom', path: ['quota', 'cost'], message: 'applies to tenants, routes and pool totals only (a key\'s spend is its provider\'s quota)' });
  }
});

const poolKeySchema = z
  .strictObject({
    id: idSchema,
    ...secretFields,
    limits: keyLimitsSchema.optional(),
    weight: z.number({ error: expecting('a weight, like 3') }).gt(0, { error: 'must be greater than 0 (leave the key out to send it nothing)' }).optional(),
    cost: z.number({ error: expecting('a price per 1M tokens (or any relative number), like 0.15') }).min(0, { error: 'must be 0 or more' }).optional(),
  })
  .superRefine(exactlyOneSecret, { when: () => true });

const mockKeySchema = z
  .strictObject({ ...secretFields, limits: keyLimitsSchema.optional() })
  .superRefine((key, ctx) => {
    // The mock counts whole-ms windows; a burst's derived window may not be one.
    if (key.limits?.requests.some((w) => w.burst === true) === true) {
      ctx.addIssue({ code: 'custom', path: ['limits', 'burst'], message: 'the mock provider enforces rpm, tpm and requests/tokens per only; declare burst on pool keys' });
    }
  })
  .superRefine(exactlyOneSecret, { when: () => true })
  .superRefine((key, ctx) => {
    // The mock provider answers 429 from windows only; a quota it ignored would look enforced.
    if ((key.limits?.quotas.length ?? 0) > 0) {
      ctx.addIssue({ code: 'custom', path: ['limits'], message: 'the mock provider enforces windows only (rpm, tpm, requests/tokens per); declare quotas on pool keys' });
    }
    if ((key.limits?.concurrency ?? null) !== null) {
      ctx.addIssue({ code: 'custom', path: ['limits', 'concurrency'], message: 'the mock provider enforces windows only; declare concurrency on pool keys' });
    }
  });

const providerSchema = z.strictObject({
  kind: z.enum(['openai'], { error: expecting('"openai" (any OpenAI-compatible server)') }),
  base_url: httpUrlSchema,
  timeout: timeoutSchema.default(60_000),
});

export const KEY_SELECTIONS = ['headroom', 'weighted', 'cheapest'] as const;
export type KeySelection = (typeof KEY_SELECTIONS)[number];

/**
 * `weight` belongs to `weighted` pools and `cost` to `cheapest` ones, on
 * every key: as with routes' strategies, a leftover is an error, not a no-op.
 */
function checkKeySelectionFields(value: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainRecord(value) || !Array.isArray(value['keys'])) return;
  const selection = value['key_selection'] ?? 'headroom';
  if (typeof selection !== 'string') return;
  value['keys'].forEach((key: unknown, index) => {
    if (!isPlainRecord(key)) return;
    const issue = (field: string, message: string) => ctx.addIssue({ code: 'custom', path: ['keys', index, field], message });
    if (selection === 'weighted' && key['weight'] === undefined) issue('weight', 'missing: every key of a pool with key_selection: weighted needs a weight');
    if (selection !== 'weighted' && key['weight'] !== undefined) issue('weight', `only allowed with key_selection: weighted (this pool's is "${selection}")`);
    if (selection === 'cheapest' && key['cost'] === undefined) issue('cost', 'missing: every key of a pool with key_selection: cheapest needs a cost');
    if (selection !== 'cheapest' && key['cost'] !== undefined) issue('cost', `only allowed with key_selection: cheapest (this pool's is "${selection}")`);
  });
}

const poolSchema = z
  .strictObject({
    provider: idSchema,
    keys: z.array(poolKeySchema).min(1, { error: 'expected at least one key' }),
    // When the provider's quota (insufficient_quota) starts afresh: a key whose quota is spent rests until then.
    quota_resets: z.enum(['monthly', 'daily'], { error: expecting('monthly or daily') }).default('monthly'),
    quota_time_zone: timeZoneSchema.default('UTC'),
    key_selection: z.enum(KEY_SELECTIONS, { error: expecting(`one of ${KEY_SELECTIONS.map((s) => `"${s}"`).join(', ')}`) }).default('headroom'),
    reserve_for_high: z
      .number({ error: expecting('a share of each window, like 0.2') })
      .min(0, { error: 'must be from 0 to below 1' })
      .lt(1, { error: 'must be below 1 (normal requests need some capacity)' })
      .default(0),
    // The pool's total over all its keys (e.g. an organization-wide provider limit the keys share).
    limits: scopeLimitsSchema.optional(),
  })
  .superRefine(checkKeySelectionFields, { when: () => true });

export const ROUTE_STRATEGIES = ['fallback', 'weighted', 'least-busy', 'latency', 'cost'] as const;
export type RouteStrategy = (typeof ROUTE_STRATEGIES)[number];
const STRATEGY_WORDS = ROUTE_STRATEGIES.map((s) => `"${s}"`).join(', ');

const modelNameSchema = z.string({ error: expecting('a model name') }).min(1, { error: 'must not be empty' });

const pricePerMillionSchema = z
  .number({ error: expecting('a price per 1M tokens, like 0.15') })
  .min(0, { error: 'must be 0 or more' });

const priceSchema = z.strictObject(
  { input: pricePerMillionSchema, output: pricePerMillionSchema },
  { error: expecting('a mapping like { input: 0.15, output: 0.6 } (USD per 1M tokens)') },
);

const targetSchema = z.strictObject({
  pool: idSchema,
  model: modelNameSchema,
  weight: z
    .number({ error: expecting('a weight, like 3') })
    .gt(0, { error: 'must be greater than 0 (leave the target out to send it nothing)' })
    .optional(),
  // What the target's provider charges: a "cost" route orders targets by it, and every request served by it is costed with it.
  price: priceSchema.optional(),
});

const degradedSchema = z
  .strictObject(
    {
      target: z.strictObject({ pool: idSchema, model: modelNameSchema, price: priceSchema.optional() }).optional(),
      answer: z.string({ error: expecting('the text of a static answer') }).min(1, { error: 'must not be empty' }).optional(),
    },
    { error: expecting('a mapping like { target: { pool: cheap, model: m } } or { answer: "..." }') },
  )
  .superRefine(exactlyOneOf('target', 'answer'), { when: () => true });

/**
 * `weight` belongs to `weighted`: a weight on a fallback route would silently
 * do nothing, so it is an error rather than a surprise. A price means
 * something on every route (requests are costed with it); `cost` needs one.
 */
function checkStrategyFields(value: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainRecord(value) || !Array.isArray(value['targets'])) return;
  const strategy = value['strategy'] ?? 'fallback';
  if (typeof strategy !== 'string') return;
  value['targets'].forEach((target: unknown, index) => {
    if (!isPlainRecord(target)) return;
    const issue = (field: string, message: string) => ctx.addIssue({ code: 'custom', path: ['targets', index, field], message });
    if (strategy === 'weighted' && target['weight'] === undefined) issue('weight', 'missing: every target of a "weighted" route needs a weight');
    if (strategy !== 'weighted' && target['weight'] !== undefined) issue('weight', `only allowed with strategy: weighted (this route's strategy is "${strategy}")`);
    if (strategy === 'cost' && target['price'] === undefined) issue('price', 'missing: every target of a "cost" route needs a price like { input: 0.15, output: 0.6 }');
  });
}

const routeSchema = z
  .strictObject({
    targets: z.array(targetSchema).min(1, { error: 'expected at least one target' }),
    strategy: z.enum(ROUTE_STRATEGIES, { error: expecting(`one of ${STRATEGY_WORDS}`) }).default('fallback'),
    degraded: degradedSchema.optional(),
    cache: z.strictObject({ ttl: durationSchema() }).optional(),
    timeout: timeoutSchema.default(30_000),
    retry: z
      .strictObject({
        attempts: z.number({ error: expecting('a whole number of rounds') }).int({ error: 'expected a whole number' }).min(1).max(10).default(3),
        backoff: durationSchema().default(100),
      })
      .default({ attempts: 3, backoff: 100 }),
    max_concurrency: maxConcurrencySchema.optional(),
    default_max_tokens: z
      .int({ error: expecting('a whole number of tokens') })
      .min(1, { error: 'must be at least 1' })
      .max(MAX_TOKENS_PER_WINDOW, { error: `must be at most ${MAX_TOKENS_PER_WINDOW}` })
      .default(DEFAULT_MAX_TOKENS),
    // How long a request may wait in the router's queue when every key is momentarily full; "0s" fails at once.
    max_wait: durationSchema({ allowZero: true, maxMs: MAX_TIMER_MS, maxWhy: ' (longer timers overflow in Node)' }).default(0),
    // Everything sent to this route, over all tenants.
    limits: scopeLimitsSchema.optional(),
  })
  .superRefine(checkStrategyFields, { when: () => true });

const tenantSchema = z.strictObject({
  virtual_keys: z.array(headerTokenSchema('a virtual key')).min(1, { error: 'expected at least one virtual key' }),
  max_concurrency: maxConcurrencySchema.optional(),
  // Everything this tenant sends, over all routes.
  limits: scopeLimitsSchema.optional(),
});

const serverSchema = z
  .strictObject({
    http: z
      .strictObject({
        host: z.string({ error: expecting('a host name or IP address') }).min(1, { error: 'must not be empty' }).default('127.0.0.1'),
        port: portSchema.default(8080),
        max_body_bytes: z.int({ error: expecting('a whole number of bytes') }).min(1, { error: 'must be at least 1' }).default(1_048_576),
      })
      .prefault({}),
    idempotency_ttl: durationSchema({ maxMs: MAX_IDEMPOTENCY_TTL_MS, maxWhy: ' (remembered responses are held in router memory)' }).default(600_000),
  })
  .prefault({});

const mockProviderSchema = z.strictObject({
  port: portSchema.default(9000),
  latency: durationSchema({ allowZero: true, maxMs: MAX_TIMER_MS, maxWhy: ' (longer timers overflow in Node)' }).default(0),
  keys: z.array(mockKeySchema).min(1, { error: 'expected at least one key' }),
});

const ROOT_WORDS = 'a mapping with providers, pools, routes and tenants';

const rawConfigSchema = z.strictObject(
  {
    server: serverSchema,
    providers: z.record(idSchema, providerSchema),
    pools: z.record(idSchema, poolSchema),
    routes: z.record(idSchema, routeSchema),
    tenants: z.record(idSchema, tenantSchema),
    mock_provider: mockProviderSchema.optional(),
  },
  { error: expecting(ROOT_WORDS) },
);

// ---- cross-references ----------------------------------------------------

function unknownRef(kind: string, name: string, known: string[]): string {
  const guess = closestName(name, known);
  return `unknown ${kind} ${JSON.stringify(name)}${guess === undefined ? '' : ` (did you mean "${guess}"?)`}`;
}

/**
 * Runs even when other parts failed (`when: () => true`) so one pass reports
 * everything; hence it reads the value as `unknown` and skips what is malformed.
 */
function checkReferences(value: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainRecord(value)) return;
  const { providers, pools, routes, tenants } = value;
  const issue = (path: PropertyKey[], message: string) => ctx.addIssue({ code: 'custom', path, message });

  const keyIdAt = new Map<string, string>();
  // One provider key listed twice would have its limits counted twice.
  const secretAt = new Map<string, string>();
  if (isPlainRecord(pools)) {
    for (const [poolId, pool] of Object.entries(pools)) {
      if (!isPlainRecord(pool)) continue;
      const providerId = typeof pool['provider'] === 'string' ? pool['provider'] : undefined;
      if (providerId !== undefined && isPlainRecord(providers) && !hasOwn(providers, providerId)) {
        issue(['pools', poolId, 'provider'], unknownRef('provider', providerId, Object.keys(providers)));
      }
      const keys = pool['keys'];
      if (!Array.isArray(keys)) continue;
      keys.forEach((key: unknown, index) => {
        if (!isPlainRecord(key)) return;
        const here = ['pools', poolId, 'keys', index];
        const id = key['id'];
        if (typeof id === 'string') {
          const first = keyIdAt.get(id);
          if (first !== undefined) issue([...here, 'id'], `duplicate key id ${JSON.stringify(id)} (first used at ${first}); key ids are unique across all pools`);
          else keyIdAt.set(id, formatPath(here));
        }
        for (const field of ['secret', 'secret_env'] as const) {
          const source = key[field];
          if (typeof source !== 'string' || providerId === undefined) continue;
          const slot = `${providerId}\0${field}\0${source}`;
          const first = secretAt.get(slot);
          if (first !== undefined) {
            issue([...here, field], `same ${field} as ${first} for provider ${JSON.stringify(providerId)}; list each provider key once so its limits count once`);
          } else {
            secretAt.set(slot, formatPath(here));
          }
        }
      });
    }
  }

  if (isPlainRecord(routes) && isPlainRecord(pools)) {
    for (const [alias, route] of Object.entries(routes)) {
      if (!isPlainRecord(route) || !Array.isArray(route['targets'])) continue;
      route['targets'].forEach((target: unknown, index) => {
        if (!isPlainRecord(target) || typeof target['pool'] !== 'string') return;
        if (!hasOwn(pools, target['pool'])) {
          issue(['routes', alias, 'targets', index, 'pool'], unknownRef('pool', target['pool'], Object.keys(pools)));
        }
      });
      const degraded = route['degraded'];
      const degradedTarget = isPlainRecord(degraded) ? degraded['target'] : undefined;
      if (isPlainRecord(degradedTarget) && typeof degradedTarget['pool'] === 'string' && !hasOwn(pools, degradedTarget['pool'])) {
        issue(['routes', alias, 'degraded', 'target', 'pool'], unknownRef('pool', degradedTarget['pool'], Object.keys(pools)));
      }
    }
  }

  checkCostQuotaPrices(routes, tenants, pools, issue);

  if (isPlainRecord(tenants)) {
    const ownerAt = new Map<string, string>();
    for (const [tenantId, tenant] of Object.entries(tenants)) {
      if (!isPlainRecord(tenant) || !Array.isArray(tenant['virtual_keys'])) continue;
      tenant['virtual_keys'].forEach((virtualKey: unknown, index) => {
        if (typeof virtualKey !== 'string') return;
        const here = ['tenants', tenantId, 'virtual_keys', index];
        const first = ownerAt.get(virtualKey);
        // Never quote the key itself: it is a credential.
        if (first !== undefined) issue(here, `this virtual key is already listed at ${first}; a virtual key belongs to one tenant only`);
        else ownerAt.set(virtualKey, formatPath(here));
      });
    }
  }
}

/** Reads the limits as written (`quota.cost`) or, once they parsed, as normalized (a quota of unit "cost"). */
function hasCostQuota(scope: unknown): boolean {
  const limits = isPlainRecord(scope) ? scope['limits'] : undefined;
  if (!isPlainRecord(limits)) return false;
  const { quota, quotas } = limits;
  if (Array.isArray(quotas)) return quotas.some((q: unknown) => isPlainRecord(q) && q['unit'] === 'cost');
  return isPlainRecord(quota) && quota['cost'] !== undefined;
}

/**
 * A cost quota counts requests at their targets' prices, so every target a
 * cost-limited request can be served by needs one: an unpriced target would
 * spend without counting. A tenant reaches every route; a route its own
 * targets; a pool total every target on that pool.
 */
function checkCostQuotaPrices(routes: unknown, tenants: unknown, pools: unknown, issue: (path: PropertyKey[], message: string) => void): void {
  if (!isPlainRecord(routes)) return;
  const costTenant = isPlainRecord(tenants) ? Object.keys(tenants).find((id) => hasCostQuota(tenants[id])) : undefined;
  const costPools = new Set(isPlainRecord(pools) ? Object.keys(pools).filter((id) => hasCostQuota(pools[id])) : []);
  for (const [alias, route] of Object.entries(routes)) {
    if (!isPlainRecord(route)) continue;
    const targets: [PropertyKey[], unknown][] = Array.isArray(route['targets']) ? route['targets'].map((t: unknown, i) => [['targets', i], t]) : [];
    const degraded = route['degraded'];
    if (isPlainRecord(degraded) && degraded['target'] !== undefined) targets.push([['degraded', 'target'], degraded['target']]);
    for (const [at, target] of targets) {
      if (!isPlainRecord(target) || target['price'] !== undefined) continue;
      const why =
        costTenant !== undefined
          ? `tenant "${costTenant}" has a cost quota`
          : hasCostQuota(route)
            ? 'this route has a cost quota'
            : typeof target['pool'] === 'string' && costPools.has(target['pool'])
              ? `pool "${target['pool']}" has a cost quota`
              : undefined;
      if (why !== undefined) issue(['routes', alias, ...at, 'price'], `missing: ${why}, so every target it can be served by needs a price like { input: 0.15, output: 0.6 }`);
    }
  }
}

// ---- normalization -------------------------------------------------------

function mapRecord<In, Out>(record: Record<string, In>, make: (id: string, value: In) => Out): Record<string, Out> {
  return toRecord(Object.entries(record).map(([id, value]) => [id, make(id, value)] as const));
}

function secretOf(key: { secret?: string | undefined; secret_env?: string | undefined }): ConfigSecret {
  return key.secret !== undefined ? { kind: 'literal', value: key.secret } : { kind: 'env', name: key.secret_env! };
}

type ConfigDegraded = { kind: 'target'; target: { poolId: string; model: string; price: TokenPrice | null } } | { kind: 'answer'; answer: string };

function degradedOf(
  degraded: { target?: { pool: string; model: string; price?: TokenPrice | undefined } | undefined; answer?: string | undefined } | undefined,
): ConfigDegraded | null {
  if (degraded === undefined) return null;
  if (degraded.target !== undefined) {
    return { kind: 'target', target: { poolId: degraded.target.pool, model: degraded.target.model, price: degraded.target.price ?? null } };
  }
  return { kind: 'answer', answer: degraded.answer! };
}

export const KeymeshConfigSchema = rawConfigSchema.superRefine(checkReferences, { when: () => true }).transform((raw) => ({
  server: {
    http: { host: raw.server.http.host, port: raw.server.http.port, maxBodyBytes: raw.server.http.max_body_bytes },
    idempotencyTtlMs: raw.server.idempotency_ttl,
  },
  providers: mapRecord(raw.providers, (id, provider) => ({
    id,
    kind: provider.kind,
    baseUrl: provider.base_url,
    timeoutMs: provider.timeout,
  })),
  pools: mapRecord(raw.pools, (id, pool) => ({
    id,
    providerId: pool.provider,
    keys: pool.keys.map((key) => ({
      id: key.id,
      secret: secretOf(key),
      limits: key.limits?.requests ?? [],
      tokenLimits: key.limits?.tokens ?? [],
      quotas: key.limits?.quotas ?? [],
      weight: key.weight ?? null,
      cost: key.cost ?? null,
      concurrency: key.limits?.concurrency ?? null,
    })),
    quotaResets: { period: pool.quota_resets, timeZone: pool.quota_time_zone },
    keySelection: pool.key_selection,
    reserveForHigh: pool.reserve_for_high,
    limits: pool.limits ?? null,
  })),
  routes: mapRecord(raw.routes, (alias, route) => ({
    alias,
    strategy: route.strategy,
    targets: route.targets.map((target) => ({
      poolId: target.pool,
      model: target.model,
      weight: target.weight ?? null,
      price: target.price ?? null,
    })),
    degraded: degradedOf(route.degraded),
    cache: route.cache === undefined ? null : { ttlMs: route.cache.ttl },
    timeoutMs: route.timeout,
    retry: { rounds: route.retry.attempts, backoffMs: route.retry.backoff },
    maxConcurrency: route.max_concurrency ?? null,
    defaultMaxTokens: route.default_max_tokens,
    maxWaitMs: route.max_wait,
    limits: route.limits ?? null,
  })),
  tenants: mapRecord(raw.tenants, (id, tenant) => ({
    id,
    virtualKeys: tenant.virtual_keys,
    maxConcurrency: tenant.max_concurrency ?? null,
    limits: tenant.limits ?? null,
  })),
  mockProvider:
    raw.mock_provider === undefined
      ? null
      : {
          port: raw.mock_provider.port,
          latencyMs: raw.mock_provider.latency,
          keys: raw.mock_provider.keys.map((key) => ({ secret: secretOf(key), limits: key.limits?.requests ?? [], tokenLimits: key.limits?.tokens ?? [] })),
        },
}));

/** A validated config: camelCase, durations in ms, limits as windows, ids repeated inside each entry, deeply frozen. */
export type KeymeshConfig = DeepReadonly<z.output<typeof KeymeshConfigSchema>>;
export type ConfigProvider = KeymeshConfig['providers'][string];
export type ConfigPool = KeymeshConfig['pools'][string];
export type ConfigKey = ConfigPool['keys'][number];
export type ConfigRoute = KeymeshConfig['routes'][string];
export type ConfigTenant = KeymeshConfig['tenants'][string];
export type MockProviderConfig = NonNullable<KeymeshConfig['mockProvider']>;
