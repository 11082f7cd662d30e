import { CircuitBreaker, DEFAULT_BREAKER_OPTIONS, type BreakerOptions, type BreakerReason, type BreakerState } from './circuit-breaker';

export interface BreakerSnapshot {
  /** A provider id, or `${poolId}/${keyId}`. */
  readonly id: string;
  readonly scope: 'provider' | 'key';
  /** Set for provider breakers. */
  readonly providerId: string | undefined;
  /** Set for key breakers. */
  readonly poolId: string | undefined;
  readonly keyId: string | undefined;
  readonly state: BreakerState;
  readonly sinceMs: number;
  readonly reason: BreakerReason | undefined;
  /** When an open breaker half-opens. */
  readonly openUntilMs: number | undefined;
}

/**
 * This router's breakers: one per provider and one per key. Keys live in a map
 * per pool so that finding a key's breaker on the hot path builds no string.
 * Breakers are made on first use; a policy that drops a provider or key
 * drops its breaker (retain), so the set, and the metrics series it backs,
 * stays bounded by what is configured.
 */
export class BreakerBoard {
  private readonly providers = new Map<string, CircuitBreaker>();
  private readonly pools = new Map<string, Map<string, CircuitBreaker>>();

  constructor(private readonly options: BreakerOptions = DEFAULT_BREAKER_OPTIONS) {}

  provider(providerId: string): CircuitBreaker {
    let breaker = this.providers.get(providerId);
    if (breaker === undefined) {
      breaker = new CircuitBreaker(providerId, this.options);
      this.providers.set(providerId, breaker);
    }
    return breaker;
  }

  /** Forgets the breakers of providers and keys the policy no longer has (a returning one starts closed). */
  retain(hasProvider: (providerId: string) => boolean, hasKey: (poolId: string, keyId: string) => boolean): void {
    for (const providerId of this.providers.keys()) if (!hasProvider(providerId)) this.providers.delete(providerId);
    for (const [poolId, keys] of this.pools) {
      for (const keyId of keys.keys()) if (!hasKey(poolId, keyId)) keys.delete(keyId);
      if (keys.size === 0) this.pools.delete(poolId);
    }
  }

  key(poolId: string, keyId: string): CircuitBreaker {
    let keys = this.pools.get(poolId);
    if (keys === undefined) {
      keys = new Map();
      this.pools.set(poolId, keys);
    }
    let breaker = keys.get(keyId);
    if (breaker === undefined) {
      breaker = new CircuitBreaker(`${poolId}/${keyId}`, this.options);
      keys.set(keyId, breaker);
    }
    return breaker;
  }

  /**
   * Every breaker that is not closed, providers first; with `includeClosed`,
   * every breaker made so far (a metrics scrape reports closed ones as 0).
   * Off the hot path: builds a fresh list each call.
   */
  snapshot(includeClosed = false): BreakerSnapshot[] {
    const out: BreakerSnapshot[] = [];
    const add = (b: CircuitBreaker, providerId: string | undefined, poolId: string | undefined, keyId: string | undefined): void => {
      if (b.state === 'closed' && !includeClosed) return;
      out.push({
        id: b.id,
        scope: keyId === undefined ? 'provider' : 'key',
        providerId,
        poolId,
        keyId,
        state: b.state,
        sinceMs: b.sinceMs,
        reason: b.reason,
        openUntilMs: b.state === 'open' ? b.openUntilMs : undefined,
      });
    };
    for (const [providerId, b] of this.providers) add(b, providerId, undefined, undefined);
    for (const [poolId, keys] of this.pools) for (const [keyId, b] of keys) add(b, undefined, poolId, keyId);
    return out;
  }
}
