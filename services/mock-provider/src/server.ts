import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequestHandler, type ProviderState } from './handlers';
import { KeyRing } from './keys';
import { failureErrors, limitErrors, validateOptions } from './options';
import type { MockFailures, MockKeyStats, MockProvider, MockProviderOptions, WindowLimit } from './types';

const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_STREAM_CHUNKS = 8;
// Longer than the usual client pool idle timeouts, so a benchmark client never
// reuses a socket the server is closing at that very moment.
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

export async function startMockProvider(options: MockProviderOptions): Promise<MockProvider> {
  validateOptions(options);
  const state: ProviderState = {
    keys: new KeyRing(options.keys),
    now: options.now ?? Date.now,
    latencyMs: options.latencyMs ?? 0,
    failures: { ...options.failures },
    streamChunks: options.streamChunks ?? DEFAULT_STREAM_CHUNKS,
    streamChunkDelayMs: options.streamChunkDelayMs ?? 0,
    lastId: 0,
  };
  const server = createServer({ keepAlive: true }, createRequestHandler(state));
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.headersTimeout = KEEP_ALIVE_TIMEOUT_MS + 1_000;

  const host = options.host ?? DEFAULT_HOST;
  await listen(server, host, options.port ?? 0);
  const { port } = server.address() as AddressInfo;
  return new RunningMockProvider(server, state, `http://${host.includes(':') ? `[${host}]` : host}:${port}/v1`, port);
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

class RunningMockProvider implements MockProvider {
  private closing: Promise<void> | undefined;

  constructor(
    private readonly server: Server,
    private readonly state: ProviderState,
    readonly url: string,
    readonly port: number,
  ) {}

  stats(secretOrIndex?: string): MockKeyStats {
    return this.state.keys.stats(secretOrIndex);
  }

  resetStats(): void {
    this.state.keys.resetStats();
  }

  revokeKey(secret: string): void {
    this.state.keys.find(secret).revoked = true;
  }

  setKeyLimits(secret: string, limits: WindowLimit[] | undefined): void {
    const errors = limits === undefined ? [] : limitErrors(limits, 'limits');
    if (errors.length > 0) throw new Error(`mock provider: ${errors.join('; ')}`);
    this.state.keys.find(secret).setLimits(limits);
  }

  setFailures(failures: MockFailures): void {
    const errors = failureErrors(failures);
    if (errors.length > 0) throw new Error(`mock provider: ${errors.join('; ')}`);
    this.state.failures = { ...failures };
  }

  setLatency(latencyMs: number): void {
    if (!Number.isInteger(latencyMs) || latencyMs < 0) throw new Error('mock provider: latencyMs: expected an integer from 0');
    this.state.latencyMs = latencyMs;
  }

  close(): Promise<void> {
    this.closing ??= new Promise((resolve, reject) => {
      this.server.close((error) => (error === undefined ? resolve() : reject(error)));
      // close() alone waits for every open connection, and a hung request's never ends.
      this.server.closeAllConnections();
    });
    return this.closing;
  }
}
