import { durationFromMs, durationMs } from '@bufbuild/protobuf/wkt';
import { KeymeshError } from '@keymesh/errors';
import type { CacheService } from '@keymesh/proto/cache/v1/cache';
import type { ServiceImpl } from '@keymesh/rpc';
import { attr } from '@keymesh/telemetry';
import { trace } from '@opentelemetry/api';
import type { Clock } from '@keymesh/clock';
import type { CacheStore } from './store/store';

function requireAddress(namespace: string, key: string): void {
  // An empty namespace would be a tenant-less cache shared by everyone.
  if (namespace === '') throw KeymeshError.invalidRequest('namespace (the tenant id) is required', 'namespace');
  if (key === '') throw KeymeshError.invalidRequest('key is required', 'key');
}

export function cacheHandlers(store: CacheStore, clock: Clock): ServiceImpl<typeof CacheService> {
  return {
    async lookup(request) {
      requireAddress(request.namespace, request.key);
      const nowMs = clock.nowMs();
      const entry = await store.get(request.namespace, request.key, nowMs);
      trace.getActiveSpan()?.setAttribute(attr.KEYMESH_CACHE_HIT, entry !== undefined);
      if (entry === undefined) return { hit: false };
      return { hit: true, value: entry.value, age: durationFromMs(nowMs - entry.storedAtMs) };
    },

    async store(request) {
      requireAddress(request.namespace, request.key);
      const ttlMs = request.ttl === undefined ? 0 : durationMs(request.ttl);
      if (!(ttlMs > 0)) throw KeymeshError.invalidRequest('ttl must be greater than 0', 'ttl');
      return { stored: await store.set(request.namespace, request.key, request.value, ttlMs, clock.nowMs()) };
    },
  };
}
