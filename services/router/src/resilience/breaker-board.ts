import { CircuitBreaker, DEFAULT_BREAKER_OPTIONS, type BreakerOptions, type BreakerReason, type BreakerState } from './circuit-breaker';

export interface BreakerSnapshot {
  /** A provider id, or `${poolId}/${keyId}`. */
  readonly id: string;
  readonly state: BreakerState;
  readonly sinceMs: number;
  readonly reason: BreakerReason | undefined;
  /** When an open breaker half-opens. */
  readonly openUntilMs: number | undefined;
}

/**
 * This router's breakers: one per provider and one per key. Keys live in a map
 * per pool so that finding a key's breaker on the hot path builds no string.
 * Breakers are made on first use and live as long as the router; the set is
 * bounded by the configured providers and keys.
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

  /** Every breaker that is not closed, providers first. */
  snapshot(): BreakerSnapshot[] {
    const out: BreakerSnapshot[] = [];
    const add = (b: CircuitBreaker): void => {
      if (b.state === 'closed') return;
      out.push({ id: b.id, state: b.state, sinceMs: b.sinceMs, reason: b.reason, openUntilMs: b.state === 'open' ? b.openUntilMs : undefined });
    };
    for (const b of this.providers.values()) add(b);
    for (const keys of this.pools.values()) for (const b of keys.values()) add(b);
    return out;
  }
}
