import { describeLimitSet, limitedScopesOf, SCOPE_KEY_ID, type Policy, type PolicyRoute, type ScopeKind, type ScopeMeasure, type TokenPrice } from '@keymesh/config';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { Context } from '@opentelemetry/api';
import type { Admission } from './acquire-batcher';
import type { LeaseAdmission } from './lease-admission';
import type { RequestTokens, TokenReservation } from './request-tokens';

/** A tenant, route or pool total with limits, as the router admits on it: a pool of one key in the limiter. */
export interface ScopeGate {
  readonly kind: ScopeKind;
  readonly id: string;
  readonly poolId: string;
  /** What its pool's token windows and quotas count: tokens, or (a cost quota's pool) micro-USD. */
  readonly measure: ScopeMeasure;
  /** Requests on it reserve their token (or cost) estimate. */
  readonly tokenLimited: boolean;
  /** The shortest request window, for the lease hold; Infinity when it has none. */
  readonly shortestWindowMs: number;
  /** Its limits in words, for the caller's 429. */
  readonly described: string;
}

/**
 * The limited scopes of one policy, by id; empty maps when nothing but keys
 * is limited. A scope's cost quotas are a gate of their own (in the *Costs
 * maps), since their pool counts micro-USD.
 */
export interface ScopeTable {
  readonly tenants: ReadonlyMap<string, ScopeGate>;
  readonly routes: ReadonlyMap<string, ScopeGate>;
  readonly pools: ReadonlyMap<string, ScopeGate>;
  readonly tenantCosts: ReadonlyMap<string, ScopeGate>;
  readonly routeCosts: ReadonlyMap<string, ScopeGate>;
  readonly poolCosts: ReadonlyMap<string, ScopeGate>;
}

export const EMPTY_SCOPE_TABLE: ScopeTable = { tenants: new Map(), routes: new Map(), pools: new Map(), tenantCosts: new Map(), routeCosts: new Map(), poolCosts: new Map() };

/** Every gate map of the table, cost gates included. */
export function gateMapsOf(scopes: ScopeTable): ReadonlyMap<string, ScopeGate>[] {
  return [scopes.tenants, scopes.routes, scopes.pools, scopes.tenantCosts, scopes.routeCosts, scopes.poolCosts];
}

export function buildScopeTable(policy: Policy): ScopeTable {
  const table = {
    tenants: new Map<string, ScopeGate>(),
    routes: new Map<string, ScopeGate>(),
    pools: new Map<string, ScopeGate>(),
    tenantCosts: new Map<string, ScopeGate>(),
    routeCosts: new Map<string, ScopeGate>(),
    poolCosts: new Map<string, ScopeGate>(),
  };
  const byKind = {
    tokens: { tenant: table.tenants, route: table.routes, pool: table.pools },
    cost: { tenant: table.tenantCosts, route: table.routeCosts, pool: table.poolCosts },
  };
  for (const scope of limitedScopesOf(policy)) {
    const { limits } = scope;
    byKind[scope.measure][scope.kind].set(scope.id, {
      kind: scope.kind,
      id: scope.id,
      poolId: scope.poolId,
      measure: scope.measure,
      tokenLimited: scope.measure === 'cost' || limits.tokens.length > 0 || limits.quotas.some((q) => q.unit === 'tokens'),
      shortestWindowMs: Math.min(...limits.requests.map((w) => w.perMs), ...limits.tokens.map((w) => w.perMs)),
      described: describeLimitSet(limits),
    });
  }
  return table;
}

/** A slot a request holds on one scope: given back if the request is not sent after all. */
export interface ScopeSlot {
  readonly gate: ScopeGate;
  readonly admission: Extract<Admission, { granted: true }>;
  /** Tokens (micro-USD on a cost gate) reserved with it, its estimate; 0 on scopes without token limits. */
  readonly tokens: number;
}

export type ScopeDenial = Extract<Admission, { granted: false }>;

/** What admission on a scope needs to know of the request. */
export interface ScopeRequest {
  readonly requestId: string;
  readonly deadlineMs: number;
  readonly traceContext: Context;
  readonly tokens?: RequestTokens;
  readonly route: { readonly defaultMaxTokens: number };
}

const NO_EXCLUDED_KEYS: string[] = [];

/**
 * Admits requests on tenants, routes and pool totals that have limits, from
 * the same leases (and exact Acquires) as keys, so each scope is exact across
 * replicas as a key is. A request takes a slot on every scope that applies to
 * it; when a later one denies it, the earlier ones are given back, so a
 * denial on one scope costs no other scope anything while the lease that
 * granted the slot lasts. A slot from an exact Acquire (a token estimate too
 * large for the lease's budget) has its tokens given back by a settle, and
 * its request slot stays counted until its window passes: at most one slot
 * per request denied that way.
 */
export class ScopeAdmission {
  constructor(
    private readonly leases: LeaseAdmission,
    private readonly settle: (reservation: TokenReservation & { usedTokens: number }) => void,
  ) {}

  /**
   * A slot on the gate's scope, or its denial. A cost gate reserves the
   * request's estimated cost at `price`: the price of the target about to be
   * tried (pool totals), or the highest of its route (tenants, routes).
   */
  take(gate: ScopeGate, request: ScopeRequest, price: TokenPrice | null): ScopeSlot | ScopeDenial | Promise<ScopeSlot | ScopeDenial> {
    const tokens = !gate.tokenLimited
      ? 0
      : gate.measure === 'cost'
        ? price === null
          ? 0
          : (request.tokens?.estimatedCost(price, request.route.defaultMaxTokens) ?? 0)
        : (request.tokens?.estimated(request.route.defaultMaxTokens) ?? 0);
    const admission = this.leases.admit(
      gate.poolId,
      NO_EXCLUDED_KEYS,
      request.requestId,
      request.deadlineMs,
      request.traceContext,
      gate.tokenLimited ? tokens : undefined,
    );
    if (admission instanceof Promise) return admission.then((a) => slotOf(gate, a, tokens));
    return slotOf(gate, admission, tokens);
  }

  giveBack(slot: ScopeSlot): void {
    this.release(slot.gate.poolId, slot.admission, slot.tokens);
  }

  /**
   * A grant no call will spend (on a scope, or on a key for a request that
   * ended while it waited): the slot goes back to the lease that granted it,
   * or the `tokens` it reserved on the granted key (a scope's is its one
   * key, SCOPE_KEY_ID) are settled as unused.
   */
  release(poolId: string, admission: Admission, tokens: number): void {
    if (!admission.granted || this.leases.giveBack(poolId, admission, tokens)) return;
    if (admission.admissionId !== undefined && tokens > 0) {
      this.settle({ poolId, keyId: admission.keyId, admissionId: admission.admissionId, reservedTokens: tokens, usedTokens: 0 });
    }
  }

  /** The slot was spent on a request that was served: its tokens are settled with the key's. */
  reserve(tokens: RequestTokens | undefined, slot: ScopeSlot): void {
    const { admissionId } = slot.admission;
    if (tokens === undefined || admissionId === undefined || slot.tokens === 0) return;
    const reservation: TokenReservation =
      slot.gate.measure === 'cost'
        ? { poolId: slot.gate.poolId, keyId: SCOPE_KEY_ID, admissionId, reservedTokens: slot.tokens, cost: true }
        : { poolId: slot.gate.poolId, keyId: SCOPE_KEY_ID, admissionId, reservedTokens: slot.tokens };
    if (tokens.scopeReservations === undefined) tokens.scopeReservations = [reservation];
    else tokens.scopeReservations.push(reservation);
  }
}

export function isScopeSlot(taken: ScopeSlot | ScopeDenial): taken is ScopeSlot {
  return 'gate' in taken;
}

function slotOf(gate: ScopeGate, admission: Admission, tokens: number): ScopeSlot | ScopeDenial {
  return admission.granted ? { gate, admission, tokens } : admission;
}

/**
 * The caller's 429 when a tenant's or route's own limit is reached: which
 * scope, which limit, and when to come back, OpenAI-style. Pool totals are
 * reported like a pool's keys (the request may go to another target), with
 * scopeMessage.
 */
export function scopeDenied(gate: ScopeGate, denial: ScopeDenial): KeymeshError {
  return new KeymeshError({
    code: Code.ResourceExhausted,
    reason: Reason.SCOPE_LIMIT_EXCEEDED,
    message: scopeMessage(gate, denial.retryAfterMs),
    ...(denial.retryAfterMs === undefined ? {} : { retryAfterMs: denial.retryAfterMs }),
    metadata: { scope: gate.kind, [gate.kind]: gate.id },
  });
}

export function scopeMessage(gate: ScopeGate, retryAfterMs: number | undefined): string {
  const name = gate.kind === 'pool' ? `the total of pool "${gate.id}"` : `${gate.kind} "${gate.id}"`;
  const retry = retryAfterMs === undefined ? '' : ` Please try again in ${Math.max(0.001, retryAfterMs / 1000).toFixed(3).replace(/\.?0+$/, '')}s.`;
  if (gate.measure === 'cost') {
    // No time to come back: the limiter found the reservation larger than the quota itself, spent or not.
    if (retryAfterMs === undefined) return `This request may cost more than the whole ${gate.described} for ${name}; lower its max_tokens.`;
    return `The ${gate.described} for ${name} is spent.${retry}`;
  }
  return `Rate limit reached for ${name} (limit: ${gate.described}).${retry}`;
}

/**
 * The price a tenant's or route's cost gate reserves at: the highest input
 * and output prices among the route's targets (its degraded target too), so
 * whichever target serves, the quota is never overrun; the settle corrects
 * to the real cost. Null when no target is priced (nothing to count).
 */
export function highestPriceOf(route: PolicyRoute): TokenPrice | null {
  let input = -1;
  let output = -1;
  for (const target of route.targets) {
    if (target.price === null) continue;
    input = Math.max(input, target.price.input);
    output = Math.max(output, target.price.output);
  }
  const degraded = route.degraded?.kind === 'target' ? route.degraded.target.price : null;
  if (degraded !== null && degraded !== undefined) {
    input = Math.max(input, degraded.input);
    output = Math.max(output, degraded.output);
  }
  return input < 0 ? null : { input, output };
}
