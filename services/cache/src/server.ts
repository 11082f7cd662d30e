import { CacheService } from '@keymesh/proto/cache/v1/cache';
import { createRpcServer } from '@keymesh/rpc';
import { createLogger, type Logger, type Telemetry } from '@keymesh/telemetry';
import { cacheHandlers } from './handlers';
import { systemClock, type Clock } from '@keymesh/clock';
import { MemoryCacheStore } from './store/memory';

export interface CacheOptions {
  telemetry: Telemetry;
  host: string;
  port: number;
  /** The memory store's byte budget; default 64 MiB. */
  maxBytes?: number;
  /** Tests move time with a FakeClock. */
  clock?: Clock;
  logger?: Logger;
}

export interface RunningCache {
  readonly port: number;
  stop(): Promise<void>;
}

/** The cache: CacheService over an in-memory LRU store. */
export async function startCache(options: CacheOptions): Promise<RunningCache> {
  const logger = options.logger ?? createLogger('cache');
  const store = new MemoryCacheStore({ maxBytes: options.maxBytes });
  const server = createRpcServer({ telemetry: options.telemetry, logger });
  server.add(CacheService, cacheHandlers(store, options.clock ?? systemClock));
  const port = await server.listen(options.host, options.port);
  return {
    port,
    async stop() {
      await server.shutdown();
      await store.close();
    },
  };
}
