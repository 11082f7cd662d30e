export { startCache } from './server';
export type { CacheOptions, RunningCache } from './server';
export type { CacheStore, CacheEntry } from './store/store';
export { MemoryCacheStore, DEFAULT_MAX_BYTES } from './store/memory';
export type { MemoryCacheStoreOptions } from './store/memory';
export { type Clock, systemClock, FakeClock } from '@keymesh/clock';
