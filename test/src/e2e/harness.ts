// Keep test output readable; tests that need logs read them from the child.
process.env.KEYMESH_LOG_LEVEL ??= 'warn';

import { parseConfig } from '@keymesh/config';
import { main, startMesh, type Mesh } from '@keymesh/cli';
import type { DescService } from '@bufbuild/protobuf';
import { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { createRpcClient, type RpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { startMockProvider, type MockKeyOptions, type MockProvider } from '@keymesh/mock-provider';

export const VIRTUAL_KEY = 'sk-keymesh-e2e-tenant';

export interface TestMesh {
  readonly mesh: Mesh;
  readonly mock: MockProvider;
  /** http://127.0.0.1:<port>/v1 */
  readonly baseUrl: string;
  readonly grpcAddress: string;
  stop(): Promise<void>;
}

export interface TestMeshOptions {
  /** The mock's keys, in pool order: key i is "k<i+1>" with secret "mock-secret-<i+1>". */
  mockKeys?: Omit<MockKeyOptions, 'secret'>[];
  /** YAML for each pool key's `limits:` (keymesh's declared limits), by index. */
  declaredLimits?: (string | undefined)[];
  /** Extra YAML appended under `routes:`. */
  extraRoutes?: string;
  /** Extra YAML appended under `providers:` (e.g. a second mock provider). */
  extraProviders?: string;
  /** Extra YAML appended under `pools:`. */
  extraPools?: string;
  /** Extra settings of the `main` pool, as `field: value` YAML lines (e.g. "reserve_for_high: 0.3"). */
  mainPoolSettings?: string[];
  /** A `price` for the targets of the standard routes (needed once a tenant has a cost quota). */
  defaultTargetPrice?: string;
  /** Extra YAML appended under `tenants:`. */
  extraTenants?: string;
  /** The provider's per-attempt timeout, e.g. "200ms". */
  providerTimeout?: string;
  /** Delay between the mock's stream chunks, so a stream lasts long enough to be cut or left mid-way. */
  streamChunkDelayMs?: number;
  /** The mesh's environment (e.g. REDIS_URL, KEYMESH_REDIS_PREFIX); empty by default. */
  env?: NodeJS.ProcessEnv;
}

export function secretOf(index: number): string {
  return `mock-secret-${index + 1}`;
}

export function configYaml(mockUrl: string, options: TestMeshOptions = {}): string {
  const keys = (options.mockKeys ?? [{}, {}, {}]).map((_, i) => {
    const limits = options.declaredLimits?.[i];
    return `      - { id: k${i + 1}, secret: ${secretOf(i)}${limits ? `, limits: ${limits}` : ''} }`;
  });
  const price = options.defaultTargetPrice === undefined ? '' : `, price: ${options.defaultTargetPrice}`;
  return `
providers:
  mock: { kind: openai, base_url: ${mockUrl}${options.providerTimeout ? `, timeout: ${options.providerTimeout}` : ''} }
${options.extraProviders ?? ''}
pools:
  main:
    provider: mock
${(options.mainPoolSettings ?? []).map((line) => `    ${line}\n`).join('')}    keys:
${keys.join('\n')}
${options.extraPools ?? ''}
routes:
  gpt-4o-mini: { targets: [ { pool: main, model: gpt-4o-mini${price} } ] }
  gpt-4o-mini-cached: { targets: [ { pool: main, model: gpt-4o-mini${price} } ], cache: { ttl: 5m } }
  text-embedding-3-small: { targets: [ { pool: main, model: text-embedding-3-small${price} } ] }
${options.extraRoutes ?? ''}
tenants:
  e2e: { virtual_keys: [ ${VIRTUAL_KEY} ] }
${options.extraTenants ?? ''}
`;
}

/** The whole mesh in this process, as `keymesh up` runs it, against a fresh mock provider. */
export async function startTestMesh(options: TestMeshOptions = {}): Promise<TestMesh> {
  const mockKeys = options.mockKeys ?? [{}, {}, {}];
  const mock = await startMockProvider({
    keys: mockKeys.map((k, i) => ({ ...k, secret: secretOf(i) })),
    ...(options.streamChunkDelayMs === undefined ? {} : { streamChunkDelayMs: options.streamChunkDelayMs }),
  });
  try {
    const config = parseConfig(configYaml(mock.url, options), 'e2e.yaml');
    const mesh = await startMesh({ config, configPath: undefined, httpPort: 0, grpcPort: 0, env: options.env ?? {} });
    return {
      mesh,
      mock,
      baseUrl: `http://127.0.0.1:${mesh.httpPort}/v1`,
      grpcAddress: `127.0.0.1:${mesh.grpcPort}`,
      async stop() {
        await mesh.stop();
        await mock.close();
      },
    };
  } catch (err) {
    await mock.close();
    throw err;
  }
}

/** A client of one of this mesh's services (a `parts` name: "limiter", "control", "key-vault", ...); the caller closes it (closeRpcClient). */
export function serviceClient<S extends DescService>(t: TestMesh, service: S, part: string): RpcClient<S> {
  const address = t.mesh.parts.find((p) => p.name === part)!.where;
  return createRpcClient(service, address, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 5_000 });
}

/** A LimiterService client on this mesh's limiter; the caller closes it (closeRpcClient). */
export function limiterClient(t: TestMesh): RpcClient<typeof LimiterService> {
  return serviceClient(t, LimiterService, 'limiter');
}

/** Runs a `keymesh` command against this mesh's services, with what it wrote; `env` adds to the service addresses. */
export async function runCli(t: TestMesh, argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const cliEnv: NodeJS.ProcessEnv = { KEYMESH_ROUTER_ADDR: t.grpcAddress };
  // "key-vault" serves at KEYMESH_KEYVAULT_ADDR, as `keymesh serve` names it.
  for (const part of t.mesh.parts) cliEnv[`KEYMESH_${part.name.toUpperCase().replace(/[^A-Z]/g, '')}_ADDR`] ??= part.where;
  const output = { stdout: '', stderr: '' };
  const writes = { stdout: process.stdout.write, stderr: process.stderr.write };
  for (const stream of ['stdout', 'stderr'] as const) {
    process[stream].write = ((chunk: string | Uint8Array) => ((output[stream] += String(chunk)), true)) as typeof process.stdout.write;
  }
  try {
    const code = await main(argv, { ...cliEnv, ...env });
    return { code, ...output };
  } finally {
    process.stdout.write = writes.stdout;
    process.stderr.write = writes.stderr;
  }
}

/** What a `keymesh` command prints, parsed as JSON; it talks to this mesh's services. */
export async function cliJson<T>(t: TestMesh, ...argv: string[]): Promise<T> {
  const { code, stdout, stderr } = await runCli(t, argv);
  if (code !== 0) throw new Error(`keymesh ${argv.join(' ')} failed: ${stderr}`);
  return JSON.parse(stdout) as T;
}
