/** One stored answer, as a store hands it back. */
export interface CacheEntry {
  /** Opaque to the cache; callers must not mutate it. */
  readonly value: Uint8Array;
  readonly storedAtMs: number;
  readonly expiresAtMs: number;
}

/**
 * Exact-match entries addressed by (namespace, key), where the namespace is the
 * tenant: two tenants never see each other's entries, whatever their keys.
 *
 * Methods return Promises so a Redis store (one round trip per call) fits
 * behind the same interface; the memory store resolves at once.
 */
export interface CacheStore {
  /** The live entry, or undefined. An entry whose TTL has passed is a miss and is dropped. */
  get(namespace: string, key: string, nowMs: number): Promise<CacheEntry | undefined>;

  /**
   * Stores (or replaces) an entry that lives until nowMs + ttlMs. Resolves
   * false, storing nothing and leaving any previous entry in place, when the
   * entry is too large for the store's budget.
   */
  set(namespace: string, key: string, value: Uint8Array, ttlMs: number, nowMs: number): Promise<boolean>;

  close(): Promise<void>;
}
