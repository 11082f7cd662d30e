import type { CacheEntry, CacheStore } from './store';

export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

/**
 * What an entry costs besides its value: the Map slot, the entry object and
 * the id string. An estimate, but it keeps a flood of tiny entries from
 * hiding behind a budget that only counted values.
 */
const ENTRY_OVERHEAD_BYTES = 96;

export interface MemoryCacheStoreOptions {
  /** The byte budget; least recently used entries are evicted to stay under it. */
  maxBytes?: number;
}

interface Entry extends CacheEntry {
  readonly bytes: number;
}

/**
 * An LRU with a byte budget. A Map iterates in insertion order, so deleting and
 * re-inserting on every hit keeps the least recently used entry first, and
 * eviction takes from the front. Expired entries are dropped when looked up or
 * when they reach the front; they count against the budget until then.
 */
export class MemoryCacheStore implements CacheStore {
  readonly maxBytes: number;
  /** An entry may use at most 1/8 of the budget, so one answer can't flush the cache. */
  readonly maxEntryBytes: number;
  private readonly entries = new Map<string, Entry>();
  private used = 0;

  constructor(options: MemoryCacheStoreOptions = {}) {
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new RangeError(`maxBytes must be a positive integer, got ${maxBytes}`);
    this.maxBytes = maxBytes;
    this.maxEntryBytes = Math.floor(maxBytes / 8);
  }

  /** Bytes charged against the budget, overhead included. */
  get usedBytes(): number {
    return this.used;
  }

  get size(): number {
    return this.entries.size;
  }

  async get(namespace: string, key: string, nowMs: number): Promise<CacheEntry | undefined> {
    const id = entryId(namespace, key);
    const entry = this.entries.get(id);
    if (entry === undefined) return undefined;
    this.entries.delete(id);
    if (nowMs >= entry.expiresAtMs) {
      this.used -= entry.bytes;
      return undefined;
    }
    this.entries.set(id, entry);
    return entry;
  }

  async set(namespace: string, key: string, value: Uint8Array, ttlMs: number, nowMs: number): Promise<boolean> {
    const id = entryId(namespace, key);
    const bytes = value.byteLength + id.length * 2 + ENTRY_OVERHEAD_BYTES;
    if (bytes > this.maxEntryBytes) return false;
    const previous = this.entries.get(id);
    if (previous !== undefined) {
      this.entries.delete(id);
      this.used -= previous.bytes;
    }
    for (const [oldestId, oldest] of this.entries) {
      if (this.used + bytes <= this.maxBytes) break;
      this.entries.delete(oldestId);
      this.used -= oldest.bytes;
    }
    // Copy: a decoded request's bytes are a view into grpc-js's receive buffer
    // (or a shared 8 KiB pool slab), which the view would keep alive unaccounted.
    // Not value.slice(): on a Buffer that is another view.
    this.entries.set(id, { value: new Uint8Array(value), storedAtMs: nowMs, expiresAtMs: nowMs + ttlMs, bytes });
    this.used += bytes;
    return true;
  }

  async close(): Promise<void> {
    this.entries.clear();
    this.used = 0;
  }
}

/** Length-prefixed, so ("ab", "c") and ("a", "bc") can never collide. */
function entryId(namespace: string, key: string): string {
  return `${namespace.length}:${namespace}${key}`;
}
