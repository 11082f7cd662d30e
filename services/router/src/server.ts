import { Subjects, type Bus } from '@keymesh/bus';
import { followPolicy } from '@keymesh/policy';
import { AnalyticsService } from '@keymesh/proto/analytics/v1/analytics';
import { CacheService } from '@keymesh/proto/cache/v1/cache';
import { ControlService } from '@keymesh/proto/control/v1/control';
import { KeysChangedEventSchema, KeyVaultService } from '@keymesh/proto/keyvault/v1/keyvault';
import { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { RouterService } from '@keymesh/proto/router/v1/router';
import { closeRpcClient, createRpcClient, createRpcServer } from '@keymesh/rpc';
import { createLogger, type Telemetry } from '@keymesh/telemetry';
import { toJson } from '@bufbuild/protobuf';
import { GetUsageResponseSchema } from '@keymesh/proto/analytics/v1/analytics';
import { AcquireBatcher } from './admission/acquire-batcher';
import { LeaseAdmission } from './admission/lease-admission';
import { SettleBatcher } from './admission/settle-batcher';
import { ScopeAdmission } from './admission/scope-admission';
import { KeyProbes } from './admission/key-probe';
import { LimitLearner } from './admission/limit-learner';
import { UsageRecorder } from './usage/usage-recorder';
import { createHttpEdge } from './edge/http-edge';
import { routerHandlers } from './handlers';
import { KeyMaterialCache } from './keys/key-material';
import { ConcurrencyGuard } from './guards/concurrency';
import { MemoryIdempotencyStore, type IdempotencyStore } from './guards/idempotency';
import { RedisIdempotencyStore } from './store/idempotency-redis';
import { renderMetrics, RequestCounter } from './metrics/metrics';
import { BreakerBoard } from './resilience';
import { Dispatcher } from './routing/dispatcher';
import { Gateway } from './routing/gateway';
import { buildRouteTable, EMPTY_ROUTE_TABLE, leaseHoldForWindow, type RouteTable } from './routing/route-table';

export interface RouterOptions {
  telemetry: Telemetry;
  bus: Bus;
  /** Presented to the key-vault, which resolves secrets for the router alone. */
  routerToken: string;
  /** host:port of each peer service. */
  peers: { limiter: string; keyvault: string; cache: string; analytics: string; control: string };
  http: { host: string; port: number };
  grpc: { host: string; port: number };
  /**
   * With Redis, Idempotency-Key answers are shared by every replica on the
   * prefix, so a retry that lands on another replica is still deduplicated.
   */
  redis?: { url: string; prefix: string };
}

export interface RunningRouter {
  readonly httpPort: number;
  readonly grpcPort: number;
  /** Resolves once the first policy is applied (the edge answers 503 on /readyz before). */
  readonly ready: Promise<void>;
  stop(): Promise<void>;
}

/** The router: HTTP edge + RouterService, holding routes and key material in memory. */
export async function startRouter(options: RouterOptions): Promise<RunningRouter> {
  const { telemetry, bus } = options;
  const logger = createLogger('router');
  const clientOptions = { telemetry, defaultTimeoutMs: 5_000 };
  const limiter = createRpcClient(LimiterService, options.peers.limiter, clientOptions);
  const keyVault = createRpcClient(KeyVaultService, options.peers.keyvault, clientOptions);
  const cache = createRpcClient(CacheService, options.peers.cache, clientOptions);
  const analytics = createRpcClient(AnalyticsService, options.peers.analytics, clientOptions);
  const control = createRpcClient(ControlService, options.peers.control, clientOptions);

  let table: RouteTable = EMPTY_ROUTE_TABLE;
  let maxBodyBytes = 1_048_576;
  let idempotencyTtlMs = 600_000;
  const concurrency = new ConcurrencyGuard();
  const idempotency: IdempotencyStore = options.redis
    ? new RedisIdempotencyStore({ redis: options.redis.url, prefix: options.redis.prefix, logger })
    : new MemoryIdempotencyStore();
  const keys = new KeyMaterialCache(keyVault, options.routerToken);
  const learner = new LimitLearner();
  const probes = new KeyProbes();
  const breakers = new BreakerBoard();
  const exact = new AcquireBatcher(limiter, telemetry);
  const settles = new SettleBatcher(limiter, logger);
  const admission = new LeaseAdmission(limiter, telemetry, exact, {
    // Windows learned from the provider's headers count like declared ones.
    holdMs: (poolId) => Math.min(table.leaseHoldMs.get(poolId) ?? 1_000, leaseHoldForWindow(learner.shortestWindowMs(poolId))),
  });
  const follower = followPolicy({
    control,
    bus,
    logger,
    onPolicy: (policy, version) => {
      const { table: next, retired } = buildRouteTable(policy, version, table);
      table = next;
      maxBodyBytes = policy.http.maxBodyBytes;
      idempotencyTtlMs = policy.http.idempotencyTtlMs;
      concurrency.apply(policy);
      // Keys may have moved or been replaced; refetch lazily rather than serve a stale secret.
      keys.drop();
      admission.reset();
      learner.reset();
      const hasKey = (poolId: string, keyId: string): boolean => policy.keys[keyId]?.poolId === poolId;
      probes.reset((poolId, keyId) => hasKey(poolId, keyId) && policy.keys[keyId]!.limits.length > 0);
      breakers.retain((providerId) => Object.hasOwn(policy.providers, providerId), hasKey);
      for (const upstream of retired) void upstream.close();
      logger.info('policy applied', { version: String(version), routes: next.routes.size });
    },
  });
  const keyEvents = bus.subscribe(Subjects.keysChanged);
  void (async () => {
    for await (const message of keyEvents) {
      try {
        keys.drop(message.decode(KeysChangedEventSchema).keyIds);
      } catch {
        keys.drop();
      }
    }
  })();

  const currentTable = (): RouteTable => table;
  const scopes = new ScopeAdmission(admission, (settlement) => settles.settle(settlement));
  const dispatcher = new Dispatcher({ table: currentTable, admission, keys, limiter, telemetry, logger, learner, probes, scopes, breakers });
  const usage = new UsageRecorder(bus);
  const gateway = new Gateway({ table: currentTable, dispatcher, cache, usage, settles, logger });

  const rpcServer = createRpcServer({ telemetry, logger });
  rpcServer.add(RouterService, routerHandlers({ table: currentTable, gateway, dispatcher, concurrency, breakers }));
  const releaseOnFailure = async (): Promise<void> => {
    follower.close();
    keyEvents.unsubscribe();
    await rpcServer.shutdown();
    for (const client of [limiter, keyVault, cache, analytics, control]) closeRpcClient(client);
    await idempotency.close();
  };
  let grpcPort: number;
  try {
    grpcPort = await rpcServer.listen(options.grpc.host, options.grpc.port);
  } catch (err) {
    // A port in use must end start-up cleanly, not leave the policy follower polling forever.
    await releaseOnFailure();
    throw err;
  }

  const requests = new RequestCounter();
  const edge = createHttpEdge({
    table: currentTable,
    gateway,
    dispatcher,
    telemetry,
    logger,
    get maxBodyBytes() {
      return maxBodyBytes;
    },
    concurrency,
    idempotency,
    get idempotencyTtlMs() {
      return idempotencyTtlMs;
    },
    usageQuery: async (tenantId, deadlineMs) =>
      toJson(GetUsageResponseSchema, await analytics.getUsage({ tenantId }, { deadlineMs })),
    requests,
    metrics: () => renderMetrics({ table: currentTable, breakers, concurrency, requests }),
  });
  let httpPort: number;
  try {
    httpPort = await edge.listen(options.http.host, options.http.port);
  } catch (err) {
    await releaseOnFailure();
    throw err;
  }

  return {
    httpPort,
    grpcPort,
    ready: follower.ready,
    async stop() {
      try {
        follower.close();
        keyEvents.unsubscribe();
        await Promise.all([edge.close(), rpcServer.shutdown()]);
        // Requests still held past the grace period give their keys' slots back now, not at their TTL,
        // and nothing is admitted any more: what is still leased goes back to the shared budget.
        await Promise.all([settles.drain(), dispatcher.holds.drain(), admission.close()]);
        await Promise.all([...table.providers.values()].map((p) => p.upstream.close()));
        for (const client of [limiter, keyVault, cache, analytics, control]) closeRpcClient(client);
        await idempotency.close();
      } finally {
        // Last, so the usage of requests that finished while the edge was closing goes out too.
        usage.flush();
      }
    },
  };
}
