import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { toJson } from '@bufbuild/protobuf';
import { ConfigError, costScopePoolId, DEMO_CONFIG_YAML, loadConfigFile, parseConfig, scopePoolId, SCOPE_KINDS } from '@keymesh/config';
import { KeymeshError } from '@keymesh/errors';
import { GetUsageResponseSchema, AnalyticsService } from '@keymesh/proto/analytics/v1/analytics';
import { ControlService } from '@keymesh/proto/control/v1/control';
import { KeyVaultService, ListKeysResponseSchema } from '@keymesh/proto/keyvault/v1/keyvault';
import { GetKeyStateResponseSchema, LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { GetBreakerStateResponseSchema, RouterService } from '@keymesh/proto/router/v1/router';
import { bearerMetadata, closeRpcClient, createRpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { peerAddress } from './addresses';
import { parseArgs, stringFlag, type ParsedArgs } from './args';
import { configFrom, untilSignalled } from './lifecycle';
import { startMesh } from './mesh';
import { serveOne } from './serve';


const USAGE = `keymesh — an LLM gateway that pools provider keys so callers never see "keys temporarily exhausted".

Usage:
  keymesh up [--config FILE]            start every service on loopback (demo config when no file)
  keymesh serve <service> [--config FILE] [--port N]
                                        run one service: router, limiter, keyvault, cache, analytics, control
  keymesh validate --config FILE        check a config file and list every problem
  keymesh apply --config FILE           send a config to the running control plane
  keymesh keys [--pool ID]              list provider keys (ids and fingerprints, never secrets)
  keymesh keys state [--pool ID]        each key's headroom, cooling and parked state
  keymesh limits [--tenant ID | --route ID | --pool ID]
                                        remaining and reset of tenants', routes' and pool totals' own limits
  keymesh usage [--tenant ID]           usage totals from analytics
  keymesh breakers                      circuit breakers that are open or half-open on a router replica
  keymesh demo-config                   print the bundled demo config

Environment:
  KEYMESH_HTTP_PORT     edge port (default: the config's server.http.port, 8080)
  KEYMESH_GRPC_PORT     RouterService port (default 50051)
  NATS_URL              use NATS as the bus (required by \`serve\`)
  REDIS_URL             keep limits in Redis, shared by every limiter replica
  KEYMESH_LIMITER_REDIS_DOWN   closed (default: deny while Redis is down) or open (local share)
  KEYMESH_LIMITER_REPLICAS     limiter replicas sharing Redis (the local share is 1/N)
  KEYMESH_LIMITER_HOLD_TTL_MS  how long a concurrency hold lasts unless renewed (default 30000):
                               the longest a router that died keeps a key's concurrency slot
  KEYMESH_MASTER_KEY    base64 of 32 bytes; seals key secrets between control and key-vault
  KEYMESH_ROUTER_TOKEN  the router's identity towards the key-vault
  KEYMESH_OPERATOR_TOKEN  what \`keymesh apply\` presents to control; unset, control refuses ApplyConfig
  KEYMESH_<SERVICE>_ADDR   where \`serve\` and the CLI find a service (e.g. KEYMESH_CONTROL_ADDR)
  OTEL_EXPORTER_OTLP_ENDPOINT   export traces over OTLP/HTTP
`;

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const args = parseArgs(argv);
  const [command, ...rest] = args.positional;
  try {
    switch (command) {
      case 'up':
        return await up(args, env);
      case 'serve':
        return await serveOne(rest[0], args, env);
      case 'validate':
        return await validate(args);
      case 'apply':
        return await apply(args, env);
      case 'keys':
        return await keys(rest[0], args, env);
      case 'limits':
        return await limits(args, env);
      case 'usage':
        return await usage(args, env);
      case 'breakers':
        return await breakers(env);
      case 'demo-config':
        process.stdout.write(DEMO_CONFIG_YAML);
        return 0;
      case undefined:
      case 'help':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        process.stderr.write(`keymesh: unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`keymesh: the config is not valid:\n  ${err.problems.join('\n  ')}\n`);
      return 1;
    }
    if (err instanceof KeymeshError) {
      process.stderr.write(`keymesh: ${err.message} (${err.reason})\n`);
      return 1;
    }
    process.stderr.write(`keymesh: ${(err as Error).message ?? String(err)}\n`);
    return 1;
  }
}

function portFrom(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined || text === '') return fallback;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${what} must be a port number, got "${text}"`);
  return port;
}

async function up(args: ParsedArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const { config, path } = await configFrom(args);
  const httpPort = portFrom(env.KEYMESH_HTTP_PORT, config.server.http.port, 'KEYMESH_HTTP_PORT');
  const grpcPort = portFrom(env.KEYMESH_GRPC_PORT, 50051, 'KEYMESH_GRPC_PORT');
  const mesh = await startMesh({ config, configPath: path, httpPort, grpcPort, env, defaultServicePorts: true });
  const width = Math.max(...mesh.parts.map((p) => p.name.length));
  const lines = mesh.parts.map((p) => `  ${p.name.padEnd(width)}  ${p.where}`);
  process.stdout.write(`keymesh is up (${path ? basename(path) : 'demo config'}${env.NATS_URL ? ', NATS bus' : ', embedded'})\n${lines.join('\n')}\n`);
  if (!path) {
    process.stdout.write(
      `\nTry it:\n  curl -s http://127.0.0.1:${mesh.httpPort}/v1/chat/completions \\\n    -H 'authorization: Bearer sk-keymesh-demo' -H 'content-type: application/json' \\\n    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'\n`,
    );
  }
  process.stdout.write('\nCtrl-C stops it.\n');
  const signal = await untilSignalled();
  process.stdout.write(`keymesh: ${signal}, stopping\n`);
  await mesh.stop();
  process.stdout.write('keymesh stopped\n');
  return 0;
}

async function validate(args: ParsedArgs): Promise<number> {
  const path = stringFlag(args, 'config');
  if (!path) throw new Error('validate needs --config FILE');
  const config = await loadConfigFile(path);
  process.stdout.write(
    `${basename(path)} is valid: ${Object.keys(config.providers).length} providers, ${Object.keys(config.pools).length} pools, ${Object.keys(config.routes).length} routes, ${Object.keys(config.tenants).length} tenants\n`,
  );
  return 0;
}

function cliClient<S extends Parameters<typeof createRpcClient>[0]>(service: S, address: string) {
  return createRpcClient(service, address, { telemetry: createTelemetry('keymesh-cli'), defaultTimeoutMs: 5_000 });
}

async function apply(args: ParsedArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const path = stringFlag(args, 'config');
  if (!path) throw new Error('apply needs --config FILE');
  const text = await readFile(path, 'utf8');
  parseConfig(text, basename(path));
  const token = env.KEYMESH_OPERATOR_TOKEN;
  if (!token) throw new Error('apply needs KEYMESH_OPERATOR_TOKEN: control accepts a config only from a caller presenting it');
  const control = cliClient(ControlService, peerAddress('control', env));
  try {
    const result = await control.applyConfig({ configYaml: text, sourceName: basename(path) }, { headers: bearerMetadata(token) });
    process.stdout.write(result.changed ? `applied as version ${result.version}\n` : `unchanged (version ${result.version})\n`);
    return 0;
  } finally {
    closeRpcClient(control);
  }
}

/** A limited scope is a pool of one key in the limiter (see limitedScopesOf): its state is that key's. */
async function limits(args: ParsedArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const kind = SCOPE_KINDS.find((k) => stringFlag(args, k) !== undefined);
  const limiter = cliClient(LimiterService, peerAddress('limiter', env));
  try {
    const state = await limiter.getKeyState({ poolId: '' });
    const wanted =
      kind === undefined
        ? (poolId: string) => SCOPE_KINDS.some((k) => poolId.startsWith(scopePoolId(k, '')))
        : // A scope's cost quotas are a pool of their own (costScopePoolId); it may have only those.
          (poolId: string) => poolId === scopePoolId(kind, stringFlag(args, kind)!) || poolId === costScopePoolId(kind, stringFlag(args, kind)!);
    // Every scope (or the one asked for), and none of the provider keys `keys state` lists.
    state.keys = state.keys.filter((key) => wanted(key.poolId));
    process.stdout.write(`${JSON.stringify(toJson(GetKeyStateResponseSchema, state), null, 2)}\n`);
    return 0;
  } finally {
    closeRpcClient(limiter);
  }
}

async function keys(sub: string | undefined, args: ParsedArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const poolId = stringFlag(args, 'pool') ?? '';
  if (sub === 'state') {
    const limiter = cliClient(LimiterService, peerAddress('limiter', env));
    try {
      process.stdout.write(`${JSON.stringify(toJson(GetKeyStateResponseSchema, await limiter.getKeyState({ poolId })), null, 2)}\n`);
    } finally {
      closeRpcClient(limiter);
    }
    return 0;
  }
  const vault = cliClient(KeyVaultService, peerAddress('keyvault', env));
  try {
    process.stdout.write(`${JSON.stringify(toJson(ListKeysResponseSchema, await vault.listKeys({ poolId })), null, 2)}\n`);
  } finally {
    closeRpcClient(vault);
  }
  return 0;
}

async function usage(args: ParsedArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const analytics = cliClient(AnalyticsService, peerAddress('analytics', env));
  try {
    const response = await analytics.getUsage({ tenantId: stringFlag(args, 'tenant') ?? '' });
    process.stdout.write(`${JSON.stringify(toJson(GetUsageResponseSchema, response), null, 2)}\n`);
  } finally {
    closeRpcClient(analytics);
  }
  return 0;
}


/** One router replica's breakers (KEYMESH_ROUTER_ADDR picks which): each replica keeps its own. */
async function breakers(env: NodeJS.ProcessEnv): Promise<number> {
  const router = cliClient(RouterService, peerAddress('router', env));
  try {
    process.stdout.write(`${JSON.stringify(toJson(GetBreakerStateResponseSchema, await router.getBreakerState({})), null, 2)}\n`);
  } finally {
    closeRpcClient(router);
  }
  return 0;
}
