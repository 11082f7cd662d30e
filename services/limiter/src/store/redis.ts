import { createHash } from 'node:crypto';
import Redis, { type RedisOptions } from 'ioredis';
import { calendarPeriodAt } from '../domain/calendar';
import { DEFAULT_KEY_SELECTION } from '../domain/key-choice';
import type {
  CalendarQuota,
  HoldRef,
  KeyCondition,
  KeyConditionState,
  KeyState,
  LeaseGrant,
  LeaseReturn,
  PoolSpec,
  QuotaPeriod,
  QuotaState,
  Settlement,
  TokenWindowState,
  WindowState,
} from '../domain/types';
import { ACQUIRE_LUA, CONDITION_LUA, CONFIGURE_HOLDS_LUA, CONFIGURE_LUA, HOLDS_LUA, LEARN_LUA, LEASE_LUA, SETTLE_LUA, SNAPSHOT_LUA } from './lua';
import { KEY_STATE_LUA } from './lua/key-state';
import {
  DEFAULT_HOLD_TTL_MS,
  type AcquireDecision,
  type KeyCandidates,
  type KeyRef,
  type LeaseCandidates,
  type LeaseDecision,
  type LimiterStore,
  type ObservedLimits,
} from './store';

export interface RedisLimiterStoreOptions {
  /** A client the store uses and leaves open, or a URL for a connection the store owns and closes. */
  readonly redis: Redis | string;
  /**
   * Every key is `${prefix}:limiter:{poolId}:...`; replicas that share limits
   * share the prefix. No `{` in it: the pool id must be the key's hash tag.
   */
  readonly prefix: string;
  /**
   * Deletes every key under the prefix on close. For tests with a private
   * prefix only: in a deployment the state outlives any one replica.
   */
  readonly deleteOnClose?: boolean;
  /**
   * Whose clock decides. 'redis': every script reads Redis TIME, so replicas
   * whose clocks disagree still share one timeline (production); the
   * caller's nowMs then only places calendar periods and converts absolute
   * times (a cooling end in, a cooling end or quota reset out), which stay
   * right as long as its skew from Redis is below a calendar period (23 h).
   * 'caller': the nowMs arguments decide (fake clocks in tests).
   */
  readonly time: 'redis' | 'caller';
}

interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

const ACQUIRE = script(ACQUIRE_LUA);
const LEASE = script(LEASE_LUA);
const CONFIGURE = script(CONFIGURE_LUA);
const CONDITION = script(CONDITION_LUA);
const SNAPSHOT = script(SNAPSHOT_LUA);
const SETTLE = script(SETTLE_LUA);
const LEARN = script(LEARN_LUA);
const CONFIGURE_HOLDS = script(CONFIGURE_HOLDS_LUA);
const HOLDS = script(`${KEY_STATE_LUA}${HOLDS_LUA}`);
const SCRIPTS = [ACQUIRE, LEASE, CONFIGURE, CONDITION, SNAPSHOT, SETTLE, LEARN, CONFIGURE_HOLDS, HOLDS];

type Arg = string | number;

/** One script call: its pool's config hash and its ARGV (ARGV[1] is the pool's key base). */
interface Call {
  readonly script: Script;
  readonly cfgKey: string;
  readonly args: readonly Arg[];
}

/**
 * The limiter's state in Redis, exact across any number of replicas: each
 * decision is one Lua script per pool (all pools of a batch in one pipeline,
 * so one round trip), with the same semantics as MemoryLimiterStore. See
 * lua/key-state.ts for the data model.
 *
 * Redis Cluster: a pool's keys share the `{poolId}` slot, but a batch that
 * spans pools is one pipeline, which ioredis' Cluster client only sends when
 * those pools live on one node; this version takes a single `Redis` client.
 * configure is one script per pool plus the pool list: concurrent replicas
 * applying the same config converge, but it is not atomic across pools.
 *
 * Time is Redis TIME or the caller's nowMs, as options.time says.
 */
/**
 * How the limiter service talks to Redis. Fail fast while disconnected: a
 * queued acquire replayed after an outage would spend capacity nobody is
 * using. The same for a script sent just before the connection dropped,
 * which ioredis would send again on reconnect (it did with
 * maxRetriesPerRequest 1): a settle run twice refunds twice, a hold or lease
 * granted again is taken by nobody. With 0 retries a script in flight fails
 * when the connection drops, as in a Redis outage, and is never resent.
 */
export const LIMITER_REDIS_OPTIONS: RedisOptions = {
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
  retryStrategy: (times) => Math.min(times * 100, 2_000),
};

export class RedisLimiterStore implements LimiterStore {
  private readonly redis: Redis;
  private readonly ownsConnection: boolean;
  private readonly root: string;
  private loading: Promise<void> | undefined;
  /** The calendar ids of each pool's quotas, from the last configure: every replica applies the config. */
  private calendarsByPool: ReadonlyMap<string, readonly string[]> = new Map();
  /** Each pool's "<keySelection>:<reserveShare>" for ACQUIRE and LEASE, from the last configure. */
  private choiceByPool: ReadonlyMap<string, string> = new Map();
  /** Per calendar id, its ARGV boundaries while nowMs stays in the current period. */
  private readonly boundaries = new Map<string, { readonly startMs: number; readonly endMs: number; readonly arg: string }>();

  constructor(private readonly options: RedisLimiterStoreOptions) {
    if (typeof options.redis === 'string') {
      this.redis = new Redis(options.redis);
      this.ownsConnection = true;
    } else {
      this.redis = options.redis;
      this.ownsConnection = false;
    }
    this.root = `${options.prefix}:limiter`;
  }

  async configure(pools: readonly PoolSpec[]): Promise<void> {
    const previous = parsePoolIds(await this.redis.get(this.poolsKey()));
    const listed = new Set(pools.map((p) => p.poolId));
    const calls: Call[] = [];
    for (const pool of pools) {
      const args: Arg[] = [this.base(pool.poolId), 'keep'];
      for (const key of pool.keys) {
        const requests = key.limits.map((l) => `${String(l.requests)}:${String(l.perMs)}`).join(',');
        const tokens = (key.tokenLimits ?? []).map((l) => `${String(l.tokens)}:${String(l.perMs)}`).join(',');
        const quotas = (key.quotas ?? []).map((q) => `${q.unit === 'requests' ? 'r' : 't'}:${String(q.limit)}:${calendarIdOf(q)}`).join(',');
        args.push(key.keyId, `${requests}|${tokens}|${quotas}|${String(key.weight ?? 1)}:${String(key.cost ?? 0)}`);
      }
      calls.push({ script: CONFIGURE, cfgKey: this.cfgKey(pool.poolId), args });
      // Caps in a hash of their own (lua/holds.ts), set in the same round trip.
      const caps: Arg[] = [this.base(pool.poolId)];
      for (const key of pool.keys) if (key.concurrency !== undefined) caps.push(key.keyId, key.concurrency);
      calls.push({ script: CONFIGURE_HOLDS, cfgKey: this.cfgKey(pool.poolId), args: caps });
    }
    for (const poolId of previous) {
      if (!listed.has(poolId)) calls.push({ script: CONFIGURE, cfgKey: this.cfgKey(poolId), args: [this.base(poolId), 'drop'] });
    }
    // Each pool is swapped atomically; pools are independent, so no acquire can
    // see half of one pool's config. The pool list only serves snapshot(undefined)
    // and dropping pools on the next configure.
    await this.run(calls);
    await this.redis.set(this.poolsKey(), JSON.stringify(pools.map((p) => p.poolId)));
    this.choiceByPool = new Map(pools.map((pool) => [pool.poolId, `${pool.keySelection ?? DEFAULT_KEY_SELECTION}:${String(pool.reserveForHigh ?? 0)}`]));
    this.calendarsByPool = new Map(
      pools.map((pool) => [pool.poolId, [...new Set(pool.keys.flatMap((key) => (key.quotas ?? []).map(calendarIdOf)))]]),
    );
  }

  async acquire(requests: readonly KeyCandidates[], nowMs: number, holdTtlMs = DEFAULT_HOLD_TTL_MS): Promise<AcquireDecision[]> {
    const answers = await this.perPool(
      ACQUIRE,
      requests,
      nowMs,
      (poolId) => [this.choiceOf(poolId), holdTtlMs],
      (request) => [request.tokens ?? 0, request.high === true ? 1 : 0, request.keyIds.length, ...request.keyIds],
    );
    return answers.map((answer): AcquireDecision => {
      if (!answer.startsWith('+')) return { granted: false, retryAfterMs: answer === '' ? undefined : Number(answer.slice(1)) };
      // "+<admissionId>|<holdId>|<keyId>": both ids are digits, so the first two bars end them whatever the key id holds.
      const bar = answer.indexOf('|');
      const holdBar = answer.indexOf('|', bar + 1);
      const holdId = answer.slice(bar + 1, holdBar);
      const keyId = answer.slice(holdBar + 1);
      const admissionId = answer.slice(1, bar);
      return holdId === '' ? { granted: true, keyId, admissionId } : { granted: true, keyId, admissionId, holdId };
    });
  }

  async lease(requests: readonly LeaseCandidates[], nowMs: number, holdMs: number, returns: readonly LeaseReturn[] = []): Promise<LeaseDecision[]> {
    const groups = groupByPool(requests);
    const returnsByPool = groupByPool(returns);
    // A pool with only returns (a router shutting down) still takes its script call.
    const poolIds = [...new Set([...groups.keys(), ...returnsByPool.keys()])];
    const calls: Call[] = poolIds.map((poolId) => {
      const given = returnsByPool.get(poolId) ?? [];
      const args: Arg[] = [...this.header(poolId, nowMs), holdMs, this.choiceOf(poolId), given.length];
      for (const i of given) args.push(returns[i]!.keyId, returns[i]!.leaseId, returns[i]!.slots, returns[i]!.tokens);
      for (const i of groups.get(poolId) ?? []) {
        const request = requests[i]!;
        args.push(request.wantedSlots, request.wantedTokens ?? 0, request.high === true ? 1 : 0, request.keyIds.length, ...request.keyIds);
      }
      return { script: LEASE, cfgKey: this.cfgKey(poolId), args };
    });
    const replies = await this.run(calls);
    const decisions: LeaseDecision[] = new Array(requests.length);
    poolIds.forEach((poolId, p) => {
      const reply = replies[p] as string[];
      let at = 0;
      for (const requestIndex of groups.get(poolId) ?? []) {
        const count = Number(reply[at++]);
        if (count === 0) {
          const wait = reply[at++]!;
          decisions[requestIndex] = { grants: [], retryAfterMs: wait === '' ? undefined : Number(wait) };
          continue;
        }
        const grants: LeaseGrant[] = [];
        for (let n = 0; n < count; n++) {
          const [keyId, slots, leaseId, tokens, admissionId] = reply.slice(at, at + 5) as [string, string, string, string, string];
          grants.push(
            admissionId === ''
              ? { keyId, slots: Number(slots), leaseId }
              : { keyId, slots: Number(slots), leaseId, tokens: Number(tokens), admissionId },
          );
          at += 5;
        }
        decisions[requestIndex] = { grants, retryAfterMs: undefined };
      }
    });
    return decisions;
  }

  async settle(settlements: readonly Settlement[], nowMs: number): Promise<void> {
    await this.perPool(SETTLE, settlements, nowMs, () => [], (s) => [s.keyId, s.admissionId, s.usedTokens - s.reservedTokens]);
  }

  async release(holds: readonly HoldRef[], nowMs: number): Promise<void> {
    await this.changeHolds('release', holds, nowMs, 0);
  }

  async renew(holds: readonly HoldRef[], nowMs: number, holdTtlMs: number): Promise<boolean[]> {
    return this.changeHolds('renew', holds, nowMs, holdTtlMs);
  }

  /** Per hold, whether it was still in flight. */
  private async changeHolds(op: 'release' | 'renew', holds: readonly HoldRef[], nowMs: number, holdTtlMs: number): Promise<boolean[]> {
    const answers = await this.perPool(HOLDS, holds, nowMs, () => [op, holdTtlMs], (hold) => [hold.keyId, hold.holdId]);
    return answers.map((answer) => answer === '1');
  }

  /**
   * One `script` call per pool of `items` (its header, then `head`, then
   * each item's args in order), all in one round trip; each item's answer
   * from its pool's reply, in the items' order.
   */
  private async perPool<T extends { readonly poolId: string }>(
    script: Script,
    items: readonly T[],
    nowMs: number,
    head: (poolId: string) => Arg[],
    argsOf: (item: T) => Arg[],
  ): Promise<string[]> {
    const groups = groupByPool(items);
    const calls: Call[] = [];
    for (const [poolId, indexes] of groups) {
      const args: Arg[] = [...this.header(poolId, nowMs), ...head(poolId)];
      for (const i of indexes) args.push(...argsOf(items[i]!));
      calls.push({ script, cfgKey: this.cfgKey(poolId), args });
    }
    const replies = await this.run(calls);
    const answers: string[] = new Array(items.length);
    let g = 0;
    for (const indexes of groups.values()) {
      const reply = (replies[g++] ?? []) as string[];
      indexes.forEach((itemIndex, j) => (answers[itemIndex] = reply[j]!));
    }
    return answers;
  }

  async learn(ref: KeyRef, observed: ObservedLimits, nowMs: number): Promise<KeyConditionState | undefined> {
    const { limit, remainingRequests } = observed;
    const [reply] = await this.run([
      {
        script: LEARN,
        cfgKey: this.cfgKey(ref.poolId),
        args: [...this.header(ref.poolId, nowMs), ref.keyId, limit?.requests ?? '', limit?.perMs ?? '', remainingRequests ?? ''],
      },
    ]);
    const fields = reply as string[];
    return fields.length === 0 ? undefined : toConditionState(fields);
  }

  cool(ref: KeyRef, untilMs: number, reason: string, nowMs: number): Promise<KeyConditionState | undefined> {
    return this.changeCondition('cool', ref, nowMs, untilMs, reason);
  }

  park(ref: KeyRef, reason: string, nowMs: number): Promise<KeyConditionState | undefined> {
    return this.changeCondition('park', ref, nowMs, 0, reason);
  }

  unpark(ref: KeyRef, nowMs: number): Promise<KeyConditionState | undefined> {
    return this.changeCondition('unpark', ref, nowMs, 0, '');
  }

  condition(ref: KeyRef, nowMs: number): Promise<KeyConditionState | undefined> {
    return this.changeCondition('get', ref, nowMs, 0, '');
  }

  async snapshot(poolId: string | undefined, nowMs: number): Promise<KeyState[]> {
    // All pools takes a second round trip (the pool list first): an admin read, not a decision.
    const poolIds = poolId !== undefined ? [poolId] : parsePoolIds(await this.redis.get(this.poolsKey()));
    const replies = await this.run(
      poolIds.map((id) => ({ script: SNAPSHOT, cfgKey: this.cfgKey(id), args: this.header(id, nowMs) })),
    );
    const states: KeyState[] = [];
    poolIds.forEach((id, p) => {
      const reply = replies[p] as string[];
      let at = 0;
      while (at < reply.length) {
        const keyId = reply[at]!;
        const condition = toConditionState(reply.slice(at + 1, at + 4));
        const count = Number(reply[at + 4]);
        at += 5;
        const windows: WindowState[] = [];
        for (let w = 0; w < count; w++) {
          windows.push({
            requests: Number(reply[at]),
            perMs: Number(reply[at + 1]),
            remaining: Number(reply[at + 2]),
            resetInMs: Number(reply[at + 3]),
          });
          at += 4;
        }
        const tokenCount = Number(reply[at++]);
        const tokenWindows: TokenWindowState[] = [];
        for (let w = 0; w < tokenCount; w++) {
          tokenWindows.push({
            tokens: Number(reply[at]),
            perMs: Number(reply[at + 1]),
            remaining: Number(reply[at + 2]),
            resetInMs: Number(reply[at + 3]),
          });
          at += 4;
        }
        const quotaCount = Number(reply[at++]);
        const quotas: QuotaState[] = [];
        for (let q = 0; q < quotaCount; q++) {
          const { period, timeZone } = parseCalendarId(reply[at + 2]!);
          quotas.push({
            unit: reply[at] === 'r' ? 'requests' : 'tokens',
            limit: Number(reply[at + 1]),
            period,
            timeZone,
            used: Number(reply[at + 3]),
            resetAtMs: reply[at + 4] === '' ? calendarPeriodAt(nowMs, period, timeZone).endMs : Number(reply[at + 4]),
          });
          at += 5;
        }
        const cap = reply[at]!;
        const inFlight = Number(reply[at + 1]);
        at += 2;
        states.push({ poolId: id, keyId, ...condition, windows, tokenWindows, quotas, ...(cap === '' ? {} : { concurrency: { limit: Number(cap), inFlight } }) });
      }
    });
    return states;
  }

  async close(): Promise<void> {
    try {
      if (this.options.deleteOnClose) await this.deleteOwnKeys();
    } finally {
      if (this.ownsConnection) await this.redis.quit();
    }
  }

  private async changeCondition(
    op: 'cool' | 'park' | 'unpark' | 'get',
    ref: KeyRef,
    nowMs: number,
    untilMs: number,
    reason: string,
  ): Promise<KeyConditionState | undefined> {
    const [reply] = await this.run([
      { script: CONDITION, cfgKey: this.cfgKey(ref.poolId), args: [...this.header(ref.poolId, nowMs), op, ref.keyId, untilMs, reason] },
    ]);
    const fields = reply as string[];
    return fields.length === 0 ? undefined : toConditionState(fields);
  }

  /** Only keys under this store's prefix: never a FLUSHDB on a Redis others share. */
  private async deleteOwnKeys(): Promise<void> {
    const match = `${escapeGlob(this.root)}:*`;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', match, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await this.redis.unlink(...keys);
    } while (cursor !== '0');
  }

  /**
   * Runs the calls in one round trip (a bare EVALSHA for one, a pipeline for
   * more) and returns their replies in order. Scripts are loaded once; a
   * NOSCRIPT (Redis restarted or flushed its script cache) reloads them and
   * reruns only the calls that answered it, which therefore never ran.
   */
  private async run(calls: readonly Call[]): Promise<unknown[]> {
    if (calls.length === 0) return [];
    await this.loadScripts();
    const replies: unknown[] = new Array(calls.length);
    let pending = calls.map((_, i) => i);
    for (let attempt = 0; ; attempt++) {
      const errors = await this.evalAll(calls, pending, replies);
      const missing = pending.filter((i) => isNoScript(errors[i]));
      for (const i of pending) if (errors[i] !== undefined && !isNoScript(errors[i])) throw errors[i];
      if (missing.length === 0) return replies;
      if (attempt > 0) throw errors[missing[0]!];
      this.loading = undefined;
      await this.loadScripts();
      pending = missing;
    }
  }

  private async evalAll(calls: readonly Call[], indexes: readonly number[], replies: unknown[]): Promise<(Error | undefined)[]> {
    const errors: (Error | undefined)[] = new Array(calls.length);
    if (indexes.length === 1) {
      const call = calls[indexes[0]!]!;
      try {
        replies[indexes[0]!] = await this.redis.evalsha(call.script.sha, 1, call.cfgKey, ...call.args);
      } catch (err) {
        errors[indexes[0]!] = err as Error;
      }
      return errors;
    }
    const pipeline = this.redis.pipeline();
    for (const i of indexes) pipeline.evalsha(calls[i]!.script.sha, 1, calls[i]!.cfgKey, ...calls[i]!.args);
    const results = (await pipeline.exec()) ?? [];
    indexes.forEach((i, j) => {
      const [err, reply] = results[j] ?? [new Error('pipeline returned no reply'), undefined];
      if (err) errors[i] = err;
      else replies[i] = reply;
    });
    return errors;
  }

  private loadScripts(): Promise<void> {
    this.loading ??= (async () => {
      const pipeline = this.redis.pipeline();
      for (const s of SCRIPTS) pipeline.script('LOAD', s.source);
      const results = (await pipeline.exec()) ?? [];
      for (const [err] of results) if (err) throw err;
    })().catch((err: unknown) => {
      this.loading = undefined;
      throw err;
    });
    return this.loading;
  }

  /** The ARGV every decision script starts with (see lua/key-state.ts): base, nowMs, calendars. */
  private header(poolId: string, nowMs: number): Arg[] {
    const calendarIds = this.calendarsByPool.get(poolId);
    const clock = this.options.time === 'redis' ? `r${String(nowMs)}` : nowMs;
    if (calendarIds === undefined || calendarIds.length === 0) return [this.base(poolId), clock, ''];
    return [this.base(poolId), clock, calendarIds.map((id) => this.boundariesOf(id, nowMs)).join(';')];
  }

  /** "<id>=<previous start>,<start>,<end>,<next end>", recomputed only when nowMs leaves the period. */
  private boundariesOf(calendarId: string, nowMs: number): string {
    const cached = this.boundaries.get(calendarId);
    if (cached !== undefined && nowMs >= cached.startMs && nowMs < cached.endMs) return cached.arg;
    const { period, timeZone } = parseCalendarId(calendarId);
    const current = calendarPeriodAt(nowMs, period, timeZone);
    const previous = calendarPeriodAt(current.startMs - 1, period, timeZone);
    const next = calendarPeriodAt(current.endMs, period, timeZone);
    const arg = `${calendarId}=${String(previous.startMs)},${String(current.startMs)},${String(current.endMs)},${String(next.endMs)}`;
    this.boundaries.set(calendarId, { startMs: current.startMs, endMs: current.endMs, arg });
    return arg;
  }

  private choiceOf(poolId: string): string {
    return this.choiceByPool.get(poolId) ?? `${DEFAULT_KEY_SELECTION}:0`;
  }

  private base(poolId: string): string {
    return `${this.root}:{${poolId}}`;
  }

  private cfgKey(poolId: string): string {
    return `${this.base(poolId)}:cfg`;
  }

  private poolsKey(): string {
    return `${this.root}:pools`;
  }
}

/** Request indexes per pool, in request order: pools share no state, so each pool's script decides its own in order. */
function groupByPool(requests: readonly { readonly poolId: string }[]): Map<string, number[]> {
  const groups = new Map<string, number[]>();
  requests.forEach((request, i) => {
    const group = groups.get(request.poolId);
    if (group === undefined) groups.set(request.poolId, [i]);
    else group.push(i);
  });
  return groups;
}

/** "day@Europe/Berlin": zone names hold no "@", ",", ":" or "|", so the id fits the Lua config strings. */
function calendarIdOf(quota: CalendarQuota): string {
  return `${quota.period}@${quota.timeZone}`;
}

function parseCalendarId(calendarId: string): { period: QuotaPeriod; timeZone: string } {
  const at = calendarId.indexOf('@');
  return { period: calendarId.slice(0, at) === 'month' ? 'month' : 'day', timeZone: calendarId.slice(at + 1) };
}

function toConditionState(fields: readonly string[]): KeyConditionState {
  return {
    condition: fields[0] as KeyCondition,
    conditionReason: fields[1] ?? '',
    coolingUntilMs: fields[2] === '' || fields[2] === undefined ? undefined : Number(fields[2]),
  };
}

function parsePoolIds(json: string | null): string[] {
  return json === null ? [] : (JSON.parse(json) as string[]);
}

function isNoScript(err: Error | undefined): boolean {
  return err !== undefined && err.message.startsWith('NOSCRIPT');
}

function escapeGlob(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}
