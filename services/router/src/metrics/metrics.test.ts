import assert from 'node:assert/strict';
import type { PolicyRoute } from '@keymesh/config';
import { ConcurrencyGuard } from '../guards/concurrency';
import { BreakerBoard, Permit } from '../resilience';
import { EMPTY_ROUTE_TABLE, type RouteTable } from '../routing/route-table';
import { renderMetrics, RequestCounter } from './metrics';

function route(alias: string, maxConcurrency: number | null): PolicyRoute {
  return { alias, strategy: 'fallback', targets: [{ poolId: 'main', providerId: 'openai', model: 'm', weight: null, price: null }], degraded: null, defaultMaxTokens: 256, maxWaitMs: 0, limits: null, cacheTtlMs: null, timeoutMs: 1_000, retry: { rounds: 1, backoffMs: 10 }, maxConcurrency };
}

describe('router metrics', () => {
  it('renders breakers, bulkheads and request counts in the text exposition format', () => {
    const capped = route('capped "a"\\b', 2);
    const table: RouteTable = { ...EMPTY_ROUTE_TABLE, routes: new Map([[capped.alias, capped], ['free', route('free', null)]]) };
    const breakers = new BreakerBoard();
    breakers.provider('openai');
    for (let i = 0; i < 5; i++) breakers.key('main', 'k1').failed(Permit.Pass, 'unavailable', 1_000);
    const concurrency = new ConcurrencyGuard();
    const release = concurrency.acquire(capped, 'tenant-1');
    const requests = new RequestCounter();
    requests.count(capped.alias, 200);
    requests.count(capped.alias, 200);
    requests.count('', 404);
    requests.count('free', 999); // out of range: ignored rather than thrown on the hot path

    const text = renderMetrics({ table: () => table, breakers, concurrency, requests });
    assert.match(text, /^# TYPE keymesh_breaker_state gauge$/m);
    assert.match(text, /^keymesh_breaker_state\{scope="provider",provider="openai",pool="",key_id=""\} 0$/m);
    assert.match(text, /^keymesh_breaker_state\{scope="key",provider="openai",pool="main",key_id="k1"\} 2$/m);
    // Label values escape backslash and double quote.
    assert.match(text, /^keymesh_inflight_requests\{scope="route",name="capped \\"a\\"\\\\b"\} 1$/m);
    assert.ok(!/name="free"/.test(text), 'an uncapped route has no bulkhead to report');
    assert.match(text, /^keymesh_http_requests_total\{route="capped \\"a\\"\\\\b",status="200"\} 2$/m);
    assert.match(text, /^keymesh_http_requests_total\{route="",status="404"\} 1$/m);
    assert.ok(text.endsWith('\n'));

    release();
    const idle = renderMetrics({ table: () => table, breakers, concurrency, requests });
    assert.match(idle, /^keymesh_inflight_requests\{scope="route",name="capped \\"a\\"\\\\b"\} 0$/m, 'an idle capped route reads 0, not nothing');
  });
});
