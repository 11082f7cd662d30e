import { createHash, randomBytes } from 'node:crypto';
import Redis from 'ioredis';
import type { Logger } from '@keymesh/telemetry';
import type { IdempotencyClaim, IdempotencyStore, StoredResponse } from '../guards/idempotency';
import type { CancelSignal } from '../routing/cancellation';

export interface RedisIdempotencyStoreOptions {
  /** A client the store uses and leaves open (tests), or a URL for a connection the store owns. */
  readonly redis: Redis | string;
  /** Every key is `${prefix}:idempotency:<sha256>`; router replicas that deduplicate together share it. */
  readonly prefix: string;
  readonly logger: Logger;
  /**
   * How long a pending marker outlives a replica that died mid-request; a
   * live one replaces it with the answer (or deletes it) when its request
   * ends. Longer than any route's timeout, or a slow first request would be
   * run twice.
   */
  readonly pendingTtlMs?: number;
  /** How often a request waiting on another replica's pending marker looks again, at most. */
  readonly maxPollMs?: number;
}

/** What a record holds; the Idempotency-Key itself is only in the (hashed) Redis key. */
type StoredRecord =
  | { readonly s: 'p'; readonly b: string; readonly o: string }
  | { readonly s: 'd'; readonly b: string; readonly st: number; readonly h: Readonly<{ [name: string]: string }>; readonly body: string };

interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/** Takes the key with a pending marker if free, else returns what holds it: one round trip per claim. */
const CLAIM = script(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
`);

/**
 * Replaces our own pending marker with the answer, or deletes it on failure.
 * A marker that expired and was taken by another replica meanwhile is not ours to touch.
 */
const SETTLE = script(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
`);

const COMMAND_TIMEOUT_MS = 250;
const DEFAULT_PENDING_TTL_MS = 660_000;
const FIRST_POLL_MS = 10;
const DEFAULT_MAX_POLL_MS = 200;

/**
 * Idempotency records in Redis, shared by every router replica on one prefix,
 * with the memory store's semantics: a concurrent duplicate waits for the
 * first request (SET NX of a pending marker; other replicas poll it) and only
 * a successful answer is remembered, for `ttlMs`.
 *
 * While Redis is unreachable the store fails open: requests run without
 * deduplication rather than fail, and that is logged once per outage.
 */
export class RedisIdempotencyStore implements IdempotencyStore {
  private readonly redis: Redis;
  private readonly ownsConnection: boolean;
  private readonly root: string;
  private readonly pendingTtlMs: number;
  private readonly maxPollMs: number;
  private readonly logger: Logger;
  private down = false;

  constructor(options: RedisIdempotencyStoreOptions) {
    if (typeof options.redis === 'string') {
      // Commands queue only while a connection attempt is under way (start-up, a restart) and
      // fail on its first failure or after 250 ms, so an outage costs a request that, not its deadline.
      this.redis = new Redis(options.redis, { maxRetriesPerRequest: 0, commandTimeout: COMMAND_TIMEOUT_MS });
      // ioredis reports every failed reconnect as an 'error' event; the outage is logged once by the store.
      this.redis.on('error', () => {});
      this.ownsConnection = true;
    } else {
      this.redis = options.redis;
      this.ownsConnection = false;
    }
    this.root = `${options.prefix}:idempotency:`;
    this.pendingTtlMs = options.pendingTtlMs ?? DEFAULT_PENDING_TTL_MS;
    this.maxPollMs = options.maxPollMs ?? DEFAULT_MAX_POLL_MS;
    this.logger = options.logger;
  }

  /** The Redis key: the caller's key is caller data (it may even hold something sensitive), so only its hash is stored. */
  redisKey(key: string): string {
    return this.root + createHash('sha256').update(key).digest('hex');
  }

  async claim(key: string, bodySha256: string, ttlMs: number, signal: CancelSignal): Promise<IdempotencyClaim> {
    const redisKey = this.redisKey(key);
    const pending = JSON.stringify({ s: 'p', b: bodySha256, o: randomBytes(12).toString('base64url') } satisfies StoredRecord);
    let pollMs = FIRST_POLL_MS;
    for (;;) {
      signal.throwIfAborted();
      let held: string | null;
      try {
        held = (await this.run(CLAIM, [redisKey], [pending, String(this.pendingTtlMs)])) as string | null;
        this.recovered();
      } catch (err) {
        this.failedOpen(err);
        return { kind: 'first', complete: () => {} };
      }
      if (held === null) return { kind: 'first', complete: (response) => void this.settle(redisKey, pending, bodySha256, response, ttlMs) };
      const record = parseRecord(held);
      if (record === undefined) {
        // Not ours to read (another version's format): run the request without deduplication.
        return { kind: 'first', complete: () => {} };
      }
      if (record.b !== bodySha256) return { kind: 'mismatch' };
      if (record.s === 'd') return { kind: 'replay', response: { status: record.st, headers: record.h, body: Buffer.from(record.body, 'base64') } };
      await pause(pollMs, signal);
      pollMs = Math.min(pollMs * 2, this.maxPollMs);
    }
  }

  async close(): Promise<void> {
    if (this.ownsConnection) this.redis.disconnect();
  }

  private async settle(redisKey: string, pending: string, bodySha256: string, response: StoredResponse | undefined, ttlMs: number): Promise<void> {
    const ok = response !== undefined && response.status >= 200 && response.status < 300;
    const done = ok
      ? JSON.stringify({ s: 'd', b: bodySha256, st: response.status, h: response.headers, body: response.body.toString('base64') } satisfies StoredRecord)
      : '';
    try {
      await this.run(SETTLE, [redisKey], [pending, done, String(Math.max(1, Math.round(ttlMs)))]);
    } catch (err) {
      // The marker expires after pendingTtlMs; until then a retry waits on it.
      this.failedOpen(err);
    }
  }

  private async run(s: Script, keys: string[], args: string[]): Promise<unknown> {
    try {
      return await this.redis.evalsha(s.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      // First call on this Redis (or after a restart): EVAL loads it for later EVALSHAs.
      return this.redis.eval(s.source, keys.length, ...keys, ...args);
    }
  }

  private failedOpen(err: unknown): void {
    if (this.down) return;
    this.down = true;
    this.logger.warn('idempotency store unreachable; serving requests without Idempotency-Key deduplication until it is back', {
      error: err instanceof Error ? err.message : String(err),
    });
  }

  private recovered(): void {
    if (!this.down) return;
    this.down = false;
    this.logger.info('idempotency store reachable again');
  }
}

function parseRecord(text: string): StoredRecord | undefined {
  try {
    const parsed = JSON.parse(text) as Partial<{ s: string; b: string; o: string; st: number; h: { [name: string]: string }; body: string }>;
    if (parsed.s === 'p' && typeof parsed.b === 'string' && typeof parsed.o === 'string') return { s: 'p', b: parsed.b, o: parsed.o };
    if (parsed.s === 'd' && typeof parsed.b === 'string' && typeof parsed.st === 'number' && typeof parsed.body === 'string' && parsed.h !== undefined) {
      return { s: 'd', b: parsed.b, st: parsed.st, h: parsed.h, body: parsed.body };
    }
  } catch {
    // fall through
  }
  return undefined;
}

/** Waits before looking at another replica's pending marker again; the caller leaving ends it early. */
function pause(ms: number, signal: CancelSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
