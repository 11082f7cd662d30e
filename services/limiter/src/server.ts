import type { Bus } from '@keymesh/bus';
import { limitedScopesOf, SCOPE_KEY_ID, type LimitedScope, type Policy } from '@keymesh/config';
import { followPolicy } from '@keymesh/policy';
import { ControlService } from '@keymesh/proto/control/v1/control';
import { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { closeRpcClient, createRpcClient, createRpcServer } from '@keymesh/rpc';
import { createLogger, type Telemetry } from '@keymesh/telemetry';
import { KeyPoolLimiter } from './domain/key-pool-limiter';
import type { CalendarQuota, PoolSpec } from './domain/types';
import { limiterHandlers } from './handlers';
import { systemClock, type Clock } from '@keymesh/clock';
import { MemoryLimiterStore } from './store/memory';
import type { LimiterStore } from './store/store';
import { LIMITER_REDIS_OPTIONS, RedisLimiterStore } from './store/redis';
import { FailoverLimiterStore, type FailureMode } from './store/failover';
import Redis from 'ioredis';
import type { Logger } from '@keymesh/telemetry';

export interface LimiterOptions {
  telemetry: Telemetry;
  bus: Bus;
  controlAddress: string;
  host: string;
  port: number;
  clock?: Clock;
  /**
   * Share limits with every replica through Redis; memory (this process only)
   * without. `whenDown` says what to do while Redis does not answer.
   */
  redis?: { url: string; prefix: string; whenDown: FailureMode };
  /**
   * How long a concurrency hold lasts unless renewed: the longest a router
   * that died keeps a key's slot (DEFAULT_HOLD_TTL_MS when not given).
   */
  holdTtlMs?: number;
}

export interface RunningLimiter {
  readonly port: number;
  readonly ready: Promise<void>;
  stop(): Promise<void>;
}

/**
 * The policy's pools, then one pool of one key per limited tenant, route and
 * pool total (see limitedScopesOf): the router admits a request on each scope
 * that applies to it as on a key, so scopes share every mechanism keys have.
 */
export function poolSpecsOf(policy: Policy): PoolSpec[] {
  const keyPools: PoolSpec[] = Object.values(policy.pools).map((pool) => ({
    poolId: pool.id,
    keys: pool.keyIds.map((keyId) => ({
      keyId,
      limits: policy.keys[keyId]?.limits ?? [],
      tokenLimits: policy.keys[keyId]?.tokenLimits ?? [],
      quotas: policy.keys[keyId]?.quotas ?? [],
      ...(policy.keys[keyId]?.weight == null ? {} : { weight: policy.keys[keyId]!.weight! }),
      ...(policy.keys[keyId]?.cost == null ? {} : { cost: policy.keys[keyId]!.cost! }),
      ...(policy.keys[keyId]?.concurrency == null ? {} : { concurrency: policy.keys[keyId]!.concurrency! }),
    })),
    quotaResets: pool.quotaResets,
    keySelection: pool.keySelection,
    reserveForHigh: pool.reserveForHigh,
  }));
  const scopePools: PoolSpec[] = limitedScopesOf(policy).map((scope) => ({
    poolId: scope.poolId,
    keys: [{ keyId: SCOPE_KEY_ID, limits: scope.limits.requests, tokenLimits: scope.limits.tokens, quotas: scope.limits.quotas.map(limiterQuotaOf) }],
  }));
  return keyPools.concat(scopePools);
}

/**
 * A cost quota is a token quota of its scope's own pool (see costScopePoolId)
 * whose tokens are micro-USD: the router reserves and settles costs on it.
 */
function limiterQuotaOf(quota: LimitedScope['limits']['quotas'][number]): CalendarQuota {
  return quota.unit === 'cost' ? { ...quota, unit: 'tokens' } : { ...quota, unit: quota.unit };
}

const REDIS_CONNECT_WAIT_MS = 5_000;

async function openSharedStore(redis: NonNullable<LimiterOptions['redis']>, logger: Logger): Promise<LimiterStore> {
  const client = new Redis(redis.url, LIMITER_REDIS_OPTIONS);
  client.on('error', () => undefined);
  // Without an offline queue nothing may be sent before the connection is up;
  // a Redis still down after the wait is the failure mode's business.
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, REDIS_CONNECT_WAIT_MS);
    client.once('ready', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return new FailoverLimiterStore(new RedisLimiterStore({ redis: client, prefix: redis.prefix, time: 'redis' }), {
    mode: redis.whenDown,
    onChange: (degraded, cause) =>
      degraded
        ? logger.error(`redis unreachable: limiting ${redis.whenDown.kind === 'closed' ? 'closed (denying)' : 'open (local share)'}`, { error: cause as Error })
        : logger.info('redis reachable again: limiting across replicas'),
  });
}

export async function startLimiter(options: LimiterOptions): Promise<RunningLimiter> {
  const logger = createLogger('limiter');
  const clock = options.clock ?? systemClock;
  const store = options.redis ? await openSharedStore(options.redis, logger) : new MemoryLimiterStore();
  const limiter = new KeyPoolLimiter(store, options.holdTtlMs);
  const control = createRpcClient(ControlService, options.controlAddress, { telemetry: options.telemetry });
  // Pools are applied in order: a slow apply must not be overtaken by the next.
  let applying: Promise<void> = Promise.resolve();
  let applied: () => void = () => undefined;
  const firstApplied = new Promise<void>((resolve) => (applied = resolve));
  const follower = followPolicy({
    control,
    bus: options.bus,
    logger,
    onPolicy: (policy, version) => {
      applying = applying
        .then(() => limiter.applyPools(poolSpecsOf(policy)))
        .then(
          () => applied(),
          (err: unknown) => logger.error('pools not applied', { version: String(version), error: err as Error }),
        );
    },
  });
  const server = createRpcServer({ telemetry: options.telemetry, logger });
  server.add(LimiterService, limiterHandlers(limiter, clock, options.bus));
  const port = await server.listen(options.host, options.port);
  return {
    port,
    ready: follower.ready.then(() => firstApplied),
    async stop() {
      follower.close();
      await server.shutdown();
      closeRpcClient(control);
      await store.close();
    },
  };
}
