import assert from 'node:assert/strict';
import { Code, KeymeshError } from '@keymesh/errors';
import { RouterService } from '@keymesh/proto/router/v1/router';
import { closeRpcClient, createRpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

describe('RouterService over gRPC', function () {
  let t: TestMesh;
  let router: ReturnType<typeof createRpcClient<typeof RouterService>>;
  const auth = { authorization: `Bearer ${VIRTUAL_KEY}` };

  before(async function () {
    t = await startTestMesh();
    router = createRpcClient(RouterService, t.grpcAddress, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 10_000 });
  });
  after(async function () {
    closeRpcClient(router);
    await t?.stop();
  });

  it('answers a unary chat with the served key in the trailers', async function () {
    let keyId: string | undefined;
    const response = await router.chat(
      { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'grpc hello' }], parameters: { maxTokens: 50 } },
      { headers: auth, onTrailers: (md) => (keyId = String(md.get('x-keymesh-key-id')[0])) },
    );
    assert.match(response.choices[0].message?.content ?? '', /grpc hello/);
    assert.ok((response.usage?.totalTokens ?? 0) > 0);
    assert.match(keyId ?? '', /^k[123]$/);
  });

  it('streams deltas and the final usage', async function () {
    let text = '';
    let usage = 0;
    for await (const delta of router.chatStream({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'grpc stream' }] }, { headers: auth })) {
      text += delta.contentDelta;
      usage = delta.usage?.totalTokens ?? usage;
    }
    assert.match(text, /grpc stream/);
    assert.ok(usage > 0);
  });

  it('rejects a wrong virtual key with UNAUTHENTICATED and an ErrorInfo reason', async function () {
    await assert.rejects(
      router.chat({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }, { headers: { authorization: 'Bearer nope' } }),
      (err: unknown) => {
        assert.ok(err instanceof KeymeshError);
        assert.equal(err.code, Code.Unauthenticated);
        assert.equal(err.reason, 'UNAUTHENTICATED');
        return true;
      },
    );
  });

  it('rejects an unknown model with NOT_FOUND', async function () {
    await assert.rejects(router.chat({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }, { headers: auth }), (err: unknown) => {
      assert.ok(err instanceof KeymeshError);
      assert.equal(err.code, Code.NotFound);
      assert.equal(err.reason, 'ROUTE_NOT_FOUND');
      return true;
    });
  });
});

describe('RouterService bulkheads', function () {
  let t: TestMesh;
  let router: ReturnType<typeof createRpcClient<typeof RouterService>>;
  const auth = { authorization: `Bearer ${VIRTUAL_KEY}` };

  before(async function () {
    t = await startTestMesh({ extraRoutes: '  gpt-single: { targets: [ { pool: main, model: gpt-4o-mini } ], max_concurrency: 1 }' });
    router = createRpcClient(RouterService, t.grpcAddress, { telemetry: createTelemetry('e2e-client'), defaultTimeoutMs: 10_000 });
  });
  after(async function () {
    closeRpcClient(router);
    await t?.stop();
  });

  it('counts gRPC calls against a route\'s max_concurrency and frees the slot when a call ends', async function () {
    t.mock.setLatency(300);
    const ask = () => router.chat({ model: 'gpt-single', messages: [{ role: 'user', content: 'one at a time' }] }, { headers: auth });
    const first = ask();
    await new Promise((resolve) => setTimeout(resolve, 50));
    await assert.rejects(ask(), (err: unknown) => {
      assert.ok(err instanceof KeymeshError);
      assert.equal(err.code, Code.ResourceExhausted);
      assert.equal(err.reason, 'CONCURRENCY_LIMIT');
      return true;
    });
    await first;
    t.mock.setLatency(0);
    // The slot came back: the next call is served.
    const after = await ask();
    assert.match(after.choices[0].message?.content ?? '', /one at a time/);
  });
});
