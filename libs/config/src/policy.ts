/**
 * The policy: what control serves to every service (GetPolicy). It is the
 * config with every secret removed: literal provider keys are sealed (only
 * key-vault can open them), env-sourced keys are named, and virtual keys are
 * reduced to their sha256. JSON-safe, so it travels over gRPC as is.
 */
import { z } from 'zod';
import { ConfigError, describeIssue, problemAt, problemsFromIssues } from './config-error';
import { deepFreeze, findProtoKeys, hasOwn, isPlainRecord, toRecord } from './freeze';
import { sha256Hex } from './hash';
import type { TokenPrice } from './price';
import { DEFAULT_MAX_TOKENS, ENV_NAME_PATTERN, ID_PATTERN, KEY_SELECTIONS, MAX_REQUESTS_PER_WINDOW, MAX_TOKENS_PER_WINDOW, ROUTE_STRATEGIES, type KeymeshConfig, type KeySelection, type RouteStrategy } from './schema';
import type { CalendarQuota, DeepReadonly, KeyQuota, LimitSet, TokenWindowLimit, WindowLimit } from './types';

export type { LimitSet, TokenWindowLimit, WindowLimit } from './types';
export type { KeySelection, RouteStrategy } from './schema';

export type SecretSource = { readonly kind: 'env'; readonly name: string } | { readonly kind: 'sealed'; readonly sealed: string };

export interface PolicyKey {
  readonly id: string;
  readonly poolId: string;
  readonly providerId: string;
  readonly secret: SecretSource;
  readonly limits: WindowLimit[];
  /** Empty when the provider limits no tokens for this key (or nobody declared it). */
  readonly tokenLimits: TokenWindowLimit[];
  /** Calendar quotas (per day or month of a time zone); empty when none was declared. */
  readonly quotas: KeyQuota[];
  /** Requests in flight at once on the key across every router (held and released through the limiter); null: no cap. */
  readonly concurrency: number | null;
  /** First 12 hex digits of sha256(secret) for literal secrets; "" for env-sourced ones (unknown to control). */
  readonly fingerprint: string;
  /** Share of grants in a pool with key_selection weighted; null elsewhere. */
  readonly weight: number | null;
  /** Price that a pool with key_selection cheapest orders by; null elsewhere. */
  readonly cost: number | null;
}
export interface PolicyProvider {
  readonly id: string;
  readonly kind: 'openai';
  readonly baseUrl: string;
  readonly timeoutMs: number;
}
export interface PolicyPool {
  readonly id: string;
  readonly providerId: string;
  readonly keyIds: string[];
  /** When the provider's quota for the pool's keys starts afresh (a spent quota rests a key until then). */
  readonly quotaResets: { readonly period: 'monthly' | 'daily'; readonly timeZone: string };
  /** How the limiter picks among the pool's keys with room. */
  readonly keySelection: KeySelection;
  /** Share (0 to below 1) of every key's windows only high-priority requests may use. */
  readonly reserveForHigh: number;
  /** The pool's total over all its keys; null when it declares none. */
  readonly limits: LimitSet | null;
}
export interface PolicyTarget {
  readonly poolId: string;
  readonly providerId: string;
  readonly model: string;
  /** Relative share of first tries on a `weighted` route; null on other strategies. */
  readonly weight: number | null;
  /** Price per 1M tokens, which a `cost` route orders by; null on other strategies. */
  readonly price: TokenPrice | null;
}
/** The last resort once every target and retry round failed: a cheaper target, or a static answer. */
export type PolicyDegraded =
  | { readonly kind: 'target'; readonly target: PolicyTarget }
  | { readonly kind: 'answer'; readonly answer: string };
export interface PolicyRoute {
  readonly alias: string;
  /** How the targets are ordered for each request; failover then follows that order. */
  readonly strategy: RouteStrategy;
  readonly targets: PolicyTarget[];
  readonly degraded: PolicyDegraded | null;
  readonly cacheTtlMs: number | null;
  readonly timeoutMs: number;
  /** Rounds over every target and key when none served, with full-jitter backoff from backoffMs. */
  readonly retry: { readonly rounds: number; readonly backoffMs: number };
  /** Requests of this route in flight at once on one router; null for no cap. */
  readonly maxConcurrency: number | null;
  /** Completion tokens a request reserves when it names no max_tokens (pools with token limits only). */
  readonly defaultMaxTokens: number;
  /**
   * How long a request may wait (queued by priority, then arrival) when every
   * key is momentarily full, instead of failing at once; 0 = no waiting.
   */
  readonly maxWaitMs: number;
  /** Everything sent to this route, over all tenants; null when it declares none. */
  readonly limits: LimitSet | null;
}
export interface PolicyTenant {
  readonly id: string;
  /** Hex sha256 of each virtual key; the keys themselves never leave the config file. */
  readonly virtualKeySha256: string[];
  /** Requests of this tenant in flight at once on one router; null for no cap. */
  readonly maxConcurrency: number | null;
  /** Everything this tenant sends, over all routes; null when it declares none. */
  readonly limits: LimitSet | null;
}
export interface Policy {
  readonly providers: Record<string, PolicyProvider>;
  readonly pools: Record<string, PolicyPool>;
  readonly keys: Record<string, PolicyKey>;
  readonly routes: Record<string, PolicyRoute>;
  readonly tenants: Record<string, PolicyTenant>;
  readonly http: {
    readonly host: string;
    readonly port: number;
    readonly maxBodyBytes: number;
    /** How long the edge remembers a successful answer under an `Idempotency-Key`. */
    readonly idempotencyTtlMs: number;
  };
}

const FINGERPRINT_HEX_DIGITS = 12;
// Shorter plaintexts can appear inside any sealed blob by chance.
const MIN_PLAINTEXT_TO_CHECK = 8;

/**
 * Compiles a validated config into a frozen policy. `sealSecret` encrypts one
 * literal provider key (key-vault's envelope encryption in production).
 */
export function compilePolicy(config: KeymeshConfig, sealSecret: (plaintext: string) => string): Policy {
  const keys: [string, PolicyKey][] = [];
  for (const pool of Object.values(config.pools)) {
    for (const key of pool.keys) {
      let secret: SecretSource;
      let fingerprint = '';
      if (key.secret.kind === 'literal') {
        const plaintext = key.secret.value;
        const sealed = sealSecret(plaintext);
        if (typeof sealed !== 'string' || sealed === '' || (plaintext.length >= MIN_PLAINTEXT_TO_CHECK && sealed.includes(plaintext))) {
          // A guard against wiring an identity function here: every service fetches the policy.
          throw new Error(`sealSecret returned an empty or unsealed value for key "${key.id}"`);
        }
        secret = { kind: 'sealed', sealed };
        fingerprint = sha256Hex(plaintext).slice(0, FINGERPRINT_HEX_DIGITS);
      } else {
        secret = { kind: 'env', name: key.secret.name };
      }
      keys.push([
        key.id,
        {
          id: key.id,
          poolId: pool.id,
          providerId: pool.providerId,
          secret,
          limits: key.limits.map((w) => ({ ...w })),
          tokenLimits: key.tokenLimits.map((w) => ({ ...w })),
          // The config rejects cost quotas on keys (keyLimitsSchema).
          quotas: key.quotas.filter(isKeyQuota).map((q) => ({ ...q })),
          concurrency: key.concurrency,
          fingerprint,
          weight: key.weight,
          cost: key.cost,
        },
      ]);
    }
  }
  const policy: Policy = {
    providers: toRecord(
      Object.values(config.providers).map((p) => [p.id, { id: p.id, kind: p.kind, baseUrl: p.baseUrl, timeoutMs: p.timeoutMs }] as const),
    ),
    pools: toRecord(
      Object.values(config.pools).map(
        (p) =>
          [
            p.id,
            {
              id: p.id,
              providerId: p.providerId,
              keyIds: p.keys.map((k) => k.id),
              quotaResets: { ...p.quotaResets },
              keySelection: p.keySelection,
              reserveForHigh: p.reserveForHigh,
              limits: copyLimits(p.limits),
            },
          ] as const,
      ),
    ),
    keys: toRecord(keys),
    routes: toRecord(
      Object.values(config.routes).map(
        (r) =>
          [
            r.alias,
            {
              alias: r.alias,
              strategy: r.strategy,
              targets: r.targets.map((t) => ({
                poolId: t.poolId,
                providerId: config.pools[t.poolId]!.providerId,
                model: t.model,
                weight: t.weight,
                price: t.price === null ? null : { ...t.price },
              })),
              degraded:
                r.degraded === null
                  ? null
                  : r.degraded.kind === 'answer'
                    ? { kind: 'answer' as const, answer: r.degraded.answer }
                    : {
                        kind: 'target' as const,
                        target: {
                          poolId: r.degraded.target.poolId,
                          providerId: config.pools[r.degraded.target.poolId]!.providerId,
                          model: r.degraded.target.model,
                          weight: null,
                          price: r.degraded.target.price === null ? null : { ...r.degraded.target.price },
                        },
                      },
              cacheTtlMs: r.cache === null ? null : r.cache.ttlMs,
              timeoutMs: r.timeoutMs,
              retry: { rounds: r.retry.rounds, backoffMs: r.retry.backoffMs },
              maxConcurrency: r.maxConcurrency,
              defaultMaxTokens: r.defaultMaxTokens,
              maxWaitMs: r.maxWaitMs,
              limits: copyLimits(r.limits),
            },
          ] as const,
      ),
    ),
    tenants: toRecord(
      Object.values(config.tenants).map(
        (t) => [t.id, { id: t.id, virtualKeySha256: t.virtualKeys.map(sha256Hex), maxConcurrency: t.maxConcurrency, limits: copyLimits(t.limits) }] as const,
      ),
    ),
    http: { ...config.server.http, idempotencyTtlMs: config.server.idempotencyTtlMs },
  };
  return deepFreeze(policy);
}

function copyLimits(limits: DeepReadonly<LimitSet> | null): LimitSet | null {
  if (limits === null) return null;
  return { requests: limits.requests.map((w) => ({ ...w })), tokens: limits.tokens.map((w) => ({ ...w })), quotas: limits.quotas.map((q) => ({ ...q })) };
}

// ---- parsing a received policy ---------------------------------------------

const id = z.string().regex(ID_PATTERN, { error: 'expected an id of 1-128 letters, digits, ".", "_", ":" or "-"' });
const positiveInt = z.int().min(1);

// A burst window's per × B / N need not be whole ms.
const windowLimitSchema = z.strictObject({ requests: positiveInt.max(MAX_REQUESTS_PER_WINDOW), perMs: z.number().positive(), burst: z.literal(true).optional() });
const tokenWindowLimitSchema = z.strictObject({ tokens: positiveInt.max(MAX_TOKENS_PER_WINDOW), perMs: positiveInt });
// The limiter validates the zone again when it applies the policy (a control plane may run another Intl).
const quotaSchema = z.strictObject({
  // "cost" counts micro-USD; only tenants, routes and pool totals have it.
  unit: z.enum(['requests', 'tokens', 'cost']),
  limit: positiveInt.max(Number.MAX_SAFE_INTEGER),
  period: z.enum(['day', 'month']),
  timeZone: z.string().min(1),
});

const keyQuotaSchema = quotaSchema.extend({ unit: z.enum(['requests', 'tokens']) });

function isKeyQuota(quota: CalendarQuota): quota is KeyQuota {
  return quota.unit !== 'cost';
}

// Defaults to null: a policy from a control plane that predates scope limits still parses.
const limitSetSchema = z
  .strictObject({ requests: z.array(windowLimitSchema), tokens: z.array(tokenWindowLimitSchema), quotas: z.array(quotaSchema) })
  .nullable()
  .default(null);

const secretSourceSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('env'), name: z.string().regex(ENV_NAME_PATTERN) }),
  z.strictObject({ kind: z.literal('sealed'), sealed: z.string().min(1) }),
]);

const httpUrl = z.string().refine((text) => URL.canParse(text) && /^https?:$/.test(new URL(text).protocol), {
  error: 'expected an http(s) URL',
});

const targetSchema = z.strictObject({
  poolId: id,
  providerId: id,
  model: z.string().min(1),
  weight: z.number().gt(0).nullable(),
  price: z.strictObject({ input: z.number().min(0), output: z.number().min(0) }).nullable(),
});

const policySchema = z
  .strictObject({
    providers: z.record(id, z.strictObject({ id, kind: z.literal('openai'), baseUrl: httpUrl, timeoutMs: positiveInt })),
    pools: z.record(
      id,
      z.strictObject({
        id,
        providerId: id,
        keyIds: z.array(id).min(1),
        quotaResets: z.strictObject({ period: z.enum(['monthly', 'daily']), timeZone: z.string().min(1) }),
        // Defaults: a policy from a control plane that predates key selection still parses.
        keySelection: z.enum(KEY_SELECTIONS).default('headroom'),
        reserveForHigh: z.number().min(0).lt(1).default(0),
        limits: limitSetSchema,
      }),
    ),
    keys: z.record(
      id,
      z.strictObject({
        id,
        poolId: id,
        providerId: id,
        secret: secretSourceSchema,
        limits: z.array(windowLimitSchema),
        // Defaults: a policy from a control plane that predates token limits still parses.
        tokenLimits: z.array(tokenWindowLimitSchema).default([]),
        quotas: z.array(keyQuotaSchema).default([]),
        concurrency: positiveInt.nullable().default(null),
        fingerprint: z.string().regex(/^(?:[0-9a-f]{12})?$/, { error: 'expected 12 hex digits or ""' }),
        weight: z.number().gt(0).nullable().default(null),
        cost: z.number().min(0).nullable().default(null),
      }),
    ),
    routes: z.record(
      id,
      z.strictObject({
        alias: id,
        strategy: z.enum(ROUTE_STRATEGIES),
        targets: z.array(targetSchema).min(1),
        degraded: z
          .discriminatedUnion('kind', [
            z.strictObject({ kind: z.literal('target'), target: targetSchema }),
            z.strictObject({ kind: z.literal('answer'), answer: z.string().min(1) }),
          ])
          .nullable(),
        cacheTtlMs: positiveInt.nullable(),
        timeoutMs: positiveInt,
        retry: z.strictObject({ rounds: positiveInt, backoffMs: positiveInt }),
        maxConcurrency: positiveInt.nullable(),
        defaultMaxTokens: positiveInt.default(DEFAULT_MAX_TOKENS),
        maxWaitMs: z.int().min(0).default(0),
        limits: limitSetSchema,
      }),
    ),
    tenants: z.record(
      id,
      z.strictObject({
        id,
        virtualKeySha256: z.array(z.string().regex(/^[0-9a-f]{64}$/, { error: 'expected a hex sha256' })).min(1),
        maxConcurrency: positiveInt.nullable(),
        limits: limitSetSchema,
      }),
    ),
    http: z.strictObject({
      host: z.string().min(1),
      port: z.int().min(0).max(65535),
      maxBodyBytes: positiveInt,
      idempotencyTtlMs: positiveInt,
    }),
  })
  .superRefine(checkPolicyReferences, { when: () => true });

// The interfaces above are the contract other services read; this fails to
// compile if the schema and the interfaces drift apart.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
true satisfies Same<z.output<typeof policySchema>, Policy>;

/** A policy is only usable if every id inside an entry matches its map key and every reference resolves. */
function checkPolicyReferences(value: unknown, ctx: z.RefinementCtx): void {
  if (!isPlainRecord(value)) return;
  const issue = (path: PropertyKey[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  const entries = (section: string): [string, Record<string, unknown>][] => {
    const map = value[section];
    return isPlainRecord(map) ? Object.entries(map).filter((e): e is [string, Record<string, unknown>] => isPlainRecord(e[1])) : [];
  };
  const idFields: Record<string, string> = { providers: 'id', pools: 'id', keys: 'id', routes: 'alias', tenants: 'id' };
  for (const [section, field] of Object.entries(idFields)) {
    for (const [key, entry] of entries(section)) {
      if (typeof entry[field] === 'string' && entry[field] !== key) issue([section, key, field], `expected ${JSON.stringify(key)} (its map key)`);
    }
  }
  const { providers, pools, keys } = value;
  const poolProvider = (poolId: string): unknown => (hasOwn(pools, poolId) ? (pools as Record<string, { providerId?: unknown }>)[poolId]!.providerId : undefined);
  for (const [poolId, pool] of entries('pools')) {
    if (typeof pool['providerId'] === 'string' && !hasOwn(providers, pool['providerId'])) {
      issue(['pools', poolId, 'providerId'], `unknown provider ${JSON.stringify(pool['providerId'])}`);
    }
    if (!Array.isArray(pool['keyIds'])) continue;
    pool['keyIds'].forEach((keyId: unknown, index) => {
      if (typeof keyId !== 'string') return;
      if (!hasOwn(keys, keyId)) issue(['pools', poolId, 'keyIds', index], `unknown key ${JSON.stringify(keyId)}`);
      else if ((keys as Record<string, { poolId?: unknown }>)[keyId]!.poolId !== poolId) {
        issue(['pools', poolId, 'keyIds', index], `key ${JSON.stringify(keyId)} belongs to another pool`);
      }
    });
  }
  for (const [keyId, key] of entries('keys')) {
    if (typeof key['poolId'] !== 'string') continue;
    if (!hasOwn(pools, key['poolId'])) issue(['keys', keyId, 'poolId'], `unknown pool ${JSON.stringify(key['poolId'])}`);
    else if (poolProvider(key['poolId']) !== key['providerId']) issue(['keys', keyId, 'providerId'], "expected its pool's provider");
  }
  const checkTarget = (target: unknown, path: PropertyKey[]): void => {
    if (!isPlainRecord(target) || typeof target['poolId'] !== 'string') return;
    if (!hasOwn(pools, target['poolId'])) issue([...path, 'poolId'], `unknown pool ${JSON.stringify(target['poolId'])}`);
    else if (poolProvider(target['poolId']) !== target['providerId']) issue([...path, 'providerId'], "expected its pool's provider");
  };
  for (const [alias, route] of entries('routes')) {
    if (Array.isArray(route['targets'])) route['targets'].forEach((target: unknown, index) => checkTarget(target, ['routes', alias, 'targets', index]));
    const degraded = route['degraded'];
    if (isPlainRecord(degraded)) checkTarget(degraded['target'], ['routes', alias, 'degraded', 'target']);
  }
}

/** Rebuilds maps without prototypes (see toRecord) and freezes. */
function settle(parsed: z.output<typeof policySchema>): Policy {
  return deepFreeze({
    providers: toRecord(Object.entries(parsed.providers)),
    pools: toRecord(Object.entries(parsed.pools)),
    keys: toRecord(Object.entries(parsed.keys)),
    routes: toRecord(Object.entries(parsed.routes)),
    tenants: toRecord(Object.entries(parsed.tenants)),
    http: parsed.http,
  });
}

/** Parses a policy received over the bus: validated (unknown fields rejected) and deeply frozen. Throws ConfigError. */
export function parsePolicy(json: string): Policy {
  const source = 'policy';
  let data: unknown;
  try {
    data = JSON.parse(json);
  } catch (error) {
    // V8's message quotes the text around the fault; the policy holds sealed secrets, so it stays out.
    throw new ConfigError([`${source}: invalid JSON`], { cause: error });
  }
  const problems = findProtoKeys(data).map((path) => problemAt(source, path, '"__proto__" is not allowed as a name'));
  const result = policySchema.safeParse(data, { error: describeIssue });
  if (!result.success) problems.push(...problemsFromIssues(source, result.error.issues));
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  return settle(result.data);
}
