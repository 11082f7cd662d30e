import { createHash } from 'node:crypto';
import { Code, KeymeshError } from '@keymesh/errors';
import { GuardReason } from './concurrency';
import type { CancelSignal } from '../routing/cancellation';

/** What a replay sends again: only successful answers are remembered. */
export interface StoredResponse {
  readonly status: number;
  /** The headers worth re-sending (content type, which provider/model/key served); never a request id. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

/** The outcome of claiming an idempotency key. */
export type IdempotencyClaim =
  /** No answer is known: this request runs, and must call `complete` exactly once (with undefined on failure). */
  | { readonly kind: 'first'; complete(response: StoredResponse | undefined): void }
  /** An earlier request with this key and body succeeded: send its answer. */
  | { readonly kind: 'replay'; readonly response: StoredResponse }
  /** The key was used with a different body. */
  | { readonly kind: 'mismatch' };

/**
 * Where answers to `Idempotency-Key` requests live. One small interface so a
 * Redis store (shared by all router replicas) can replace the memory one.
 */
export interface IdempotencyStore {
  /**
   * Claims `key` for a request whose body hashes to `bodySha256`. While another
   * request holds the key, waits for its outcome (single-flight): its answer
   * if it succeeded, else a fresh claim. Rejects with `signal.reason` if the
   * caller goes away while waiting.
   */
  claim(key: string, bodySha256: string, ttlMs: number, signal: CancelSignal): Promise<IdempotencyClaim>;
  close(): Promise<void>;
}

export interface MemoryIdempotencyStoreOptions {
  /** Entries kept at most, in flight ones included; the oldest go first. */
  maxEntries?: number;
  /** Bytes of stored answers (bodies and headers) kept at most; the oldest go first. DEFAULT_MAX_IDEMPOTENCY_BYTES when not given. */
  maxBytes?: number;
  clock?: { nowMs(): number };
}

/**
 * Answers are as big as callers make them (max_tokens, n, logprobs): ten
 * thousand of them could hold gigabytes. An answer larger than an eighth of
 * this is not kept at all, so one caller cannot flush everyone else's.
 */
export const DEFAULT_MAX_IDEMPOTENCY_BYTES = 64 * 1024 * 1024;

type Entry =
  | { readonly state: 'pending'; readonly bodySha256: string; readonly settled: Promise<void> }
  | { readonly state: 'done'; readonly bodySha256: string; readonly response: StoredResponse; readonly expiresAtMs: number; readonly bytes: number };

function bytesOf(response: StoredResponse): number {
  let bytes = response.body.length;
  for (const name in response.headers) bytes += name.length + response.headers[name].length;
  return bytes;
}

const systemClock = { nowMs: () => Date.now() };

/** One router's memory: retries that land on another replica are not deduplicated (RedisIdempotencyStore does that). */
export class MemoryIdempotencyStore implements IdempotencyStore {
  // A Map iterates in insertion order, and entries are (re)inserted when they
  // complete or are replayed, so its head is the least recently used.
  private readonly entries = new Map<string, Entry>();
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly clock: { nowMs(): number };
  /** Bytes of the stored answers, as bytesOf counts them. */
  private storedBytes = 0;

  constructor(options: MemoryIdempotencyStoreOptions = {}) {
    this.maxEntries = Math.max(1, options.maxEntries ?? 10_000);
    this.maxBytes = Math.max(1, options.maxBytes ?? DEFAULT_MAX_IDEMPOTENCY_BYTES);
    this.clock = options.clock ?? systemClock;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Bytes of the answers kept now. */
  get bytes(): number {
    return this.storedBytes;
  }

  async claim(key: string, bodySha256: string, ttlMs: number, signal: CancelSignal): Promise<IdempotencyClaim> {
    for (;;) {
      signal.throwIfAborted();
      let entry = this.entries.get(key);
      if (entry?.state === 'done' && entry.expiresAtMs <= this.clock.nowMs()) {
        this.remove(key, entry);
        entry = undefined;
      }
      if (entry === undefined) return this.begin(key, bodySha256, ttlMs);
      if (entry.bodySha256 !== bodySha256) return { kind: 'mismatch' };
      if (entry.state === 'done') {
        this.entries.delete(key);
        this.entries.set(key, entry);
        return { kind: 'replay', response: entry.response };
      }
      await settledOrAborted(entry.settled, signal);
    }
  }

  async close(): Promise<void> {}

  private begin(key: string, bodySha256: string, ttlMs: number): IdempotencyClaim {
    let resolve!: () => void;
    const pending: Entry = { state: 'pending', bodySha256, settled: new Promise<void>((r) => (resolve = r)) };
    this.makeRoom();
    this.entries.set(key, pending);
    let completed = false;
    return {
      kind: 'first',
      complete: (response) => {
        if (completed) return;
        completed = true;
        // Evicted (or replaced) meanwhile: the slot is no longer ours to fill.
        if (this.entries.get(key) === pending) {
          this.entries.delete(key);
          const bytes = response === undefined ? 0 : bytesOf(response);
          if (response !== undefined && response.status >= 200 && response.status < 300 && bytes <= this.maxBytes / 8) {
            this.makeRoom(bytes);
            this.entries.set(key, { state: 'done', bodySha256, response, expiresAtMs: this.clock.nowMs() + ttlMs, bytes });
            this.storedBytes += bytes;
          }
        }
        resolve();
      },
    };
  }

  /**
   * Evicts expired entries at the head, then the least recently used, until
   * one more entry of `bytes` fits. Only the entry count evicts requests in
   * flight: they hold no bytes, and evicting one lets its retry call the
   * provider a second time.
   */
  private makeRoom(bytes = 0): void {
    const nowMs = this.clock.nowMs();
    for (const [key, entry] of this.entries) {
      const expired = entry.state === 'done' && entry.expiresAtMs <= nowMs;
      const tooMany = this.entries.size >= this.maxEntries;
      const tooBig = this.storedBytes + bytes > this.maxBytes;
      if (!expired && !tooMany && !tooBig) return;
      if (!expired && !tooMany && entry.state === 'pending') continue;
      // An evicted pending entry still wakes its waiters when its request ends; they then claim afresh.
      this.remove(key, entry);
    }
  }

  private remove(key: string, entry: Entry): void {
    this.entries.delete(key);
    if (entry.state === 'done') this.storedBytes -= entry.bytes;
  }
}

/** Hex sha256 of a request body: the same key with another body is a client bug, not a retry. */
export function bodySha256(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

/** Longest `Idempotency-Key` accepted; keys are held in memory. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

export function idempotencyKeyMismatch(): KeymeshError {
  return new KeymeshError({
    code: Code.InvalidArgument,
    reason: GuardReason.IDEMPOTENCY_KEY_REUSED,
    message: 'This Idempotency-Key was already used with a different request body. Use a new key for a new request.',
  });
}

function settledOrAborted(settled: Promise<void>, signal: CancelSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    void settled.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}
