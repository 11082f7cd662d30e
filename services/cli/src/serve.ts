import { startAnalytics } from '@keymesh/analytics';
import { startCache } from '@keymesh/cache';
import { startControl } from '@keymesh/control';
import { createSealer, masterKeyFromEnv, startKeyVault } from '@keymesh/keyvault';
import { startLimiter } from '@keymesh/limiter';
import { startRouter } from '@keymesh/router';
import { createTelemetry } from '@keymesh/telemetry';
import { connectNatsBus, type Bus } from '@keymesh/bus';
import { peersFromEnv, SERVICE_NAMES, SERVICE_PORTS, type ServiceName } from './addresses';
import { stringFlag, type ParsedArgs } from './args';
import { configFrom, untilSignalled } from './lifecycle';
import { holdTtlFromEnv, operatorTokenFrom, redisFromEnv } from './mesh';

function required(env: NodeJS.ProcessEnv, name: string, why: string): string {
  const value = env[name];
  if (!value) throw new Error(`${name} must be set: ${why}`);
  return value;
}

async function natsBus(env: NodeJS.ProcessEnv, service: ServiceName): Promise<Bus> {
  const url = required(env, 'NATS_URL', 'services in separate processes share policy and events over NATS');
  return connectNatsBus({ url, name: `keymesh-${service}` });
}

async function sealerFromEnv(env: NodeJS.ProcessEnv) {
  const key = await masterKeyFromEnv(env);
  if (!key) throw new Error('KEYMESH_MASTER_KEY (or KEYMESH_MASTER_KEY_FILE) must be set: control seals key secrets with it and the key-vault opens them');
  return createSealer(key);
}

/** `keymesh serve <service>`: one service in this process, peers found by KEYMESH_<NAME>_ADDR. */
export async function serveOne(name: string | undefined, args: ParsedArgs, env: NodeJS.ProcessEnv): Promise<number> {
  if (!name || !(SERVICE_NAMES as string[]).includes(name)) {
    throw new Error(`serve needs one of: ${SERVICE_NAMES.join(', ')}`);
  }
  const service = name as ServiceName;
  const portText = stringFlag(args, 'port') ?? env[`KEYMESH_${service.toUpperCase()}_PORT`];
  const port = portText ? Number(portText) : SERVICE_PORTS[service];
  const host = env.KEYMESH_BIND_HOST || '127.0.0.1';
  const telemetry = createTelemetry(`keymesh-${service}`);
  const peers = peersFromEnv(env);
  let stop: () => Promise<void>;
  let where: string;

  switch (service) {
    case 'control': {
      const { config, path } = await configFrom(args);
      const sealer = await sealerFromEnv(env);
      const bus = await natsBus(env, service);
      const control = await startControl({ telemetry, bus, sealSecret: (p) => sealer.seal(p), config, ...(path ? { watchPath: path } : {}), ...operatorTokenFrom(env), host, port });
      where = `${host}:${control.port}`;
      stop = async () => {
        await control.stop();
        await bus.close();
      };
      break;
    }
    case 'keyvault': {
      const sealer = await sealerFromEnv(env);
      const routerToken = required(env, 'KEYMESH_ROUTER_TOKEN', 'only the router, presenting it, may resolve key secrets');
      const bus = await natsBus(env, service);
      const vault = await startKeyVault({ telemetry, bus, sealer, routerToken, controlAddress: peers.control, host, port, env });
      await vault.ready;
      where = `${host}:${vault.port}`;
      stop = async () => {
        await vault.stop();
        await bus.close();
      };
      break;
    }
    case 'limiter': {
      const bus = await natsBus(env, service);
      const limiter = await startLimiter({ telemetry, bus, controlAddress: peers.control, host, port, ...redisFromEnv(env), ...holdTtlFromEnv(env) });
      await limiter.ready;
      where = `${host}:${limiter.port}`;
      stop = async () => {
        await limiter.stop();
        await bus.close();
      };
      break;
    }
    case 'cache': {
      const cache = await startCache({ telemetry, host, port });
      where = `${host}:${cache.port}`;
      stop = () => cache.stop();
      break;
    }
    case 'analytics': {
      const bus = await natsBus(env, service);
      const analytics = await startAnalytics({ telemetry, bus, host, port });
      where = `${host}:${analytics.port}`;
      stop = async () => {
        await analytics.stop();
        await bus.close();
      };
      break;
    }
    case 'router': {
      const routerToken = required(env, 'KEYMESH_ROUTER_TOKEN', 'the router presents it to the key-vault');
      const bus = await natsBus(env, service);
      const httpPort = Number(env.KEYMESH_HTTP_PORT || 8080);
      const router = await startRouter({
        telemetry,
        bus,
        routerToken,
        peers,
        http: { host: env.KEYMESH_HTTP_HOST || host, port: httpPort },
        grpc: { host, port },
        ...redisFromEnv(env),
      });
      await router.ready;
      where = `${host}:${router.grpcPort}, edge http://${env.KEYMESH_HTTP_HOST || host}:${router.httpPort}/v1`;
      stop = async () => {
        await router.stop();
        await bus.close();
      };
      break;
    }
  }
  process.stdout.write(`keymesh ${service} serving on ${where}\n`);
  const signal = await untilSignalled();
  process.stdout.write(`keymesh ${service}: ${signal}, stopping\n`);
  await stop();
  await telemetry.shutdown().catch(() => undefined);
  return 0;
}
