import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import type { PolicyRoute } from '@keymesh/config';
import { LookupResponseSchema, type CacheService } from '@keymesh/proto/cache/v1/cache';
import { durationOfMs, type RpcClient } from '@keymesh/rpc';
import { createLogger } from '@keymesh/telemetry';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { RequestCancellation } from './cancellation';
import type { Dispatcher, RequestScope } from './dispatcher';
import { Gateway, type GatewayDeps } from './gateway';

const CACHED = '{"id":"cached","object":"chat.completion","model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}';
const FRESH = '{"id":"fresh","object":"chat.completion","model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}';

/** A gateway whose cache holds one answer stored `ageMs` ago, and whose provider answers FRESH. */
function gatewayWithCachedAnswer(ageMs: number): { gateway: Gateway; providerCalls: () => number } {
  let calls = 0;
  const cache = {
    lookup: async () => create(LookupResponseSchema, { hit: true, value: Buffer.from(CACHED), age: durationOfMs(ageMs) }),
    store: async () => ({}),
  } as unknown as RpcClient<typeof CacheService>;
  const dispatcher = {
    run: async () => {
      calls++;
      return { value: { bytes: Buffer.from(FRESH), parsed: JSON.parse(FRESH), usage: undefined }, target: { poolId: 'main', providerId: 'mock', model: 'm', weight: null, price: null }, keyId: 'k1', attempts: 1 };
    },
  } as unknown as Dispatcher;
  const deps = { dispatcher, cache, logger: createLogger('gateway-test', 'error') } as unknown as GatewayDeps;
  return { gateway: new Gateway(deps), providerCalls: () => calls };
}

function scopeWithCacheTtl(cacheTtlMs: number): RequestScope {
  const route = { alias: 'r', cacheTtlMs, degraded: null } as unknown as PolicyRoute;
  return { requestId: 'r1', tenantId: 't', route, deadlineMs: Date.now() + 5_000, signal: new RequestCancellation(), traceContext: ROOT_CONTEXT };
}

describe('Gateway cache', () => {
  it("serves a cached answer younger than the route's ttl, and asks the provider for one older than it (the ttl was lowered)", async () => {
    const request = { model: 'm', messages: [{ role: 'user' as const, content: 'hi' }] };
    const young = gatewayWithCachedAnswer(10_000);
    assert.equal((await young.gateway.chat(scopeWithCacheTtl(60_000), request, undefined, 'use')).result.parsed.id, 'cached');
    assert.equal(young.providerCalls(), 0);

    // Stored under a one-hour ttl two minutes ago; the route's ttl is now one minute.
    const old = gatewayWithCachedAnswer(120_000);
    assert.equal((await old.gateway.chat(scopeWithCacheTtl(60_000), request, undefined, 'use')).result.parsed.id, 'fresh');
    assert.equal(old.providerCalls(), 1);
  });
});
