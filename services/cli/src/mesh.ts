import { randomBytes } from 'node:crypto';
import { connectNatsBus, createMemoryBus, type Bus } from '@keymesh/bus';
import type { ConfigSecret, KeymeshConfig } from '@keymesh/config';
import { SERVICE_PORTS, type ServiceName } from './addresses';
import { startAnalytics } from '@keymesh/analytics';
import { startCache } from '@keymesh/cache';
import { startControl } from '@keymesh/control';
import { createSealer, generateMasterKey, masterKeyFromEnv, startKeyVault } from '@keymesh/keyvault';
import { startLimiter, type FailureMode } from '@keymesh/limiter';
import { startMockProvider, type MockProvider } from '@keymesh/mock-provider';
import { startRouter } from '@keymesh/router';
import { createTelemetry, type Telemetry } from '@keymesh/telemetry';

export interface Stoppable {
  name: string;
  /** What to print: an address or URL. */
  where: string;
  stop(): Promise<void>;
}

export interface Mesh {
  readonly parts: Stoppable[];
  readonly httpPort: number;
  readonly grpcPort: number;
  readonly mock: MockProvider | undefined;
  stop(): Promise<void>;
}

export interface UpOptions {
  config: KeymeshConfig;
  /** Applied again when the file changes. */
  configPath: string | undefined;
  httpPort: number;
  grpcPort: number;
  env: NodeJS.ProcessEnv;
  /**
   * Put the internal services on their `keymesh serve` ports (50052-50056) so
   * the CLI (`keymesh keys`, `usage`, `apply`) finds them; a port in use falls
   * back to a free one. Tests leave this off and get free ports throughout.
   */
  defaultServicePorts?: boolean;
}

const LOOPBACK = '127.0.0.1';

export function secretValue(secret: ConfigSecret, env: NodeJS.ProcessEnv): string | undefined {
  return secret.kind === 'literal' ? secret.value : env[secret.name];
}

/** Starts on the preferred port, or on a free one when something else holds it. */
export async function startOnPreferredPort<T>(preferred: number, start: (port: number) => Promise<T>): Promise<T> {
  try {
    return await start(preferred);
  } catch (err) {
    // grpc-js reports a taken port as "No address added out of total 1 resolved".
    const text = String((err as Error)?.message ?? err);
    if (!text.includes('EADDRINUSE') && !text.includes('No address added')) throw err;
    return start(0);
  }
}

/**
 * REDIS_URL makes limits and Idempotency-Key answers shared across processes; KEYMESH_REDIS_PREFIX
 * separates deployments on one Redis. While Redis is down the limiter fails
 * closed (KEYMESH_LIMITER_REDIS_DOWN=closed, the default: deny with
 * retry-after) or open (=open: each replica keeps 1/KEYMESH_LIMITER_REPLICAS
 * of every limit locally).
 */
export function redisFromEnv(env: NodeJS.ProcessEnv): { redis?: { url: string; prefix: string; whenDown: FailureMode } } {
  if (!env.REDIS_URL) return {};
  const mode = env.KEYMESH_LIMITER_REDIS_DOWN || 'closed';
  if (mode !== 'closed' && mode !== 'open') throw new Error(`KEYMESH_LIMITER_REDIS_DOWN must be "closed" or "open", got "${mode}"`);
  const replicas = Number(env.KEYMESH_LIMITER_REPLICAS || 1);
  if (!Number.isInteger(replicas) || replicas < 1) throw new Error(`KEYMESH_LIMITER_REPLICAS must be a whole number >= 1, got "${env.KEYMESH_LIMITER_REPLICAS}"`);
  const whenDown: FailureMode = mode === 'closed' ? { kind: 'closed' } : { kind: 'open', replicas };
  return { redis: { url: env.REDIS_URL, prefix: env.KEYMESH_REDIS_PREFIX || 'keymesh', whenDown } };
}

/**
 * KEYMESH_LIMITER_HOLD_TTL_MS: how long a concurrency hold lasts unless its
 * router renews it, i.e. how long a router that died keeps a key's slot.
 */
export function holdTtlFromEnv(env: NodeJS.ProcessEnv): { holdTtlMs?: number } {
  const text = env.KEYMESH_LIMITER_HOLD_TTL_MS;
  if (!text) return {};
  const holdTtlMs = Number(text);
  if (!Number.isInteger(holdTtlMs) || holdTtlMs < 100) throw new Error(`KEYMESH_LIMITER_HOLD_TTL_MS must be a whole number of ms >= 100, got "${text}"`);
  return { holdTtlMs };
}

/** KEYMESH_OPERATOR_TOKEN, which `keymesh apply` presents to control; unset leaves ApplyConfig off. */
export function operatorTokenFrom(env: NodeJS.ProcessEnv): { operatorToken?: string } {
  return env.KEYMESH_OPERATOR_TOKEN ? { operatorToken: env.KEYMESH_OPERATOR_TOKEN } : {};
}

export async function busFromEnv(name: string, env: NodeJS.ProcessEnv): Promise<Bus> {
  return env.NATS_URL ? connectNatsBus({ url: env.NATS_URL, name }) : createMemoryBus();
}

/**
 * `keymesh up`: every service in this process, each on its own loopback gRPC
 * port with its own tracer, talking to the others over gRPC exactly as
 * separate processes would. With NATS_URL the bus is NATS; otherwise the
 * in-process bus.
 */
export async function startMesh(options: UpOptions): Promise<Mesh> {
  const { config, env } = options;
  const parts: Stoppable[] = [];
  const telemetries: Telemetry[] = [];
  const telemetry = (name: string): Telemetry => {
    const t = createTelemetry(`keymesh-${name}`);
    telemetries.push(t);
    return t;
  };
  const stopAll = async (): Promise<void> => {
    for (const part of [...parts].reverse()) await part.stop().catch(() => undefined);
    await Promise.all(telemetries.map((t) => t.shutdown().catch(() => undefined)));
  };

  try {
    const bus = await busFromEnv('keymesh', env);
    parts.push({ name: 'bus', where: env.NATS_URL ? env.NATS_URL.replace(/\/\/[^@/]*@/, '//') : 'in-process', stop: () => bus.close() });

    let mock: MockProvider | undefined;
    if (config.mockProvider) {
      const keys = config.mockProvider.keys.flatMap((k) => {
        const secret = secretValue(k.secret, env);
        return secret === undefined
          ? []
          : [{ secret, limits: [...k.limits.map((l) => ({ requests: l.requests, perMs: l.perMs })), ...k.tokenLimits.map((l) => ({ tokens: l.tokens, perMs: l.perMs }))] }];
      });
      const started = await startMockProvider({ host: LOOPBACK, port: config.mockProvider.port, keys, latencyMs: config.mockProvider.latencyMs });
      mock = started;
      parts.push({ name: 'mock provider', where: started.url, stop: () => started.close() });
    }

    const sealer = createSealer((await masterKeyFromEnv(env)) ?? generateMasterKey());
    const routerToken = env.KEYMESH_ROUTER_TOKEN || randomBytes(24).toString('base64url');

    const onPort = <T>(name: Exclude<ServiceName, 'router'>, start: (port: number) => Promise<T>): Promise<T> =>
      options.defaultServicePorts ? startOnPreferredPort(SERVICE_PORTS[name], start) : start(0);
    const control = await onPort('control', (port) =>
      startControl({
        telemetry: telemetry('control'),
        bus,
        sealSecret: (plaintext) => sealer.seal(plaintext),
        config,
        ...(options.configPath ? { watchPath: options.configPath } : {}),
        ...operatorTokenFrom(env),
        host: LOOPBACK,
        port,
      }),
    );
    const controlAddress = `${LOOPBACK}:${control.port}`;
    parts.push({ name: 'control', where: controlAddress, stop: () => control.stop() });

    const keyvault = await onPort('keyvault', (port) => startKeyVault({ telemetry: telemetry('keyvault'), bus, sealer, routerToken, controlAddress, host: LOOPBACK, port, env }));
    parts.push({ name: 'key-vault', where: `${LOOPBACK}:${keyvault.port}`, stop: () => keyvault.stop() });
    const limiter = await onPort('limiter', (port) => startLimiter({ telemetry: telemetry('limiter'), bus, controlAddress, host: LOOPBACK, port, ...redisFromEnv(env), ...holdTtlFromEnv(env) }));
    parts.push({ name: 'limiter', where: `${LOOPBACK}:${limiter.port}`, stop: () => limiter.stop() });
    const cache = await onPort('cache', (port) => startCache({ telemetry: telemetry('cache'), host: LOOPBACK, port }));
    parts.push({ name: 'cache', where: `${LOOPBACK}:${cache.port}`, stop: () => cache.stop() });
    const analytics = await onPort('analytics', (port) => startAnalytics({ telemetry: telemetry('analytics'), bus, host: LOOPBACK, port }));
    parts.push({ name: 'analytics', where: `${LOOPBACK}:${analytics.port}`, stop: () => analytics.stop() });

    const router = await startRouter({
      telemetry: telemetry('router'),
      bus,
      routerToken,
      peers: {
        limiter: `${LOOPBACK}:${limiter.port}`,
        keyvault: `${LOOPBACK}:${keyvault.port}`,
        cache: `${LOOPBACK}:${cache.port}`,
        analytics: `${LOOPBACK}:${analytics.port}`,
        control: controlAddress,
      },
      http: { host: config.server.http.host, port: options.httpPort },
      grpc: { host: LOOPBACK, port: options.grpcPort },
      // The same Redis keeps Idempotency-Key answers, so two meshes on it deduplicate together.
      ...redisFromEnv(env),
    });
    parts.push({ name: 'router (HTTP edge)', where: `http://${config.server.http.host}:${router.httpPort}/v1`, stop: () => router.stop() });
    parts.push({ name: 'router (gRPC)', where: `${LOOPBACK}:${router.grpcPort}`, stop: async () => undefined });
    await Promise.all([router.ready, keyvault.ready, limiter.ready]);

    return { parts, httpPort: router.httpPort, grpcPort: router.grpcPort, mock, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
