import assert from 'node:assert/strict';
import { Code, KeymeshError } from '@keymesh/errors';
import { Health, HealthCheckResponse_ServingStatus } from '@keymesh/proto/grpc/health/v1/health';
import { LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { createTelemetry, type Logger } from '@keymesh/telemetry';
import { closeRpcClient, createRpcClient, type RpcClient } from './client';
import { createRpcServer, type RpcServer } from './server';

const telemetry = createTelemetry('rpc-health-test');
const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
const answer = async (): Promise<Record<string, never>> => ({});

describe('grpc.health.v1 on every server', () => {
  let server: RpcServer;
  let health: RpcClient<typeof Health>;
  let shutDown = false;

  beforeEach(async () => {
    shutDown = false;
    server = createRpcServer({ telemetry, logger: quiet, shutdownGraceMs: 2_000 });
    server.add(LimiterService, { acquire: answer, acquireBatch: answer, grantLeases: answer, settle: answer, reportOutcome: answer, release: answer, getKeyState: answer });
    const port = await server.listen('127.0.0.1', 0);
    health = createRpcClient(Health, `127.0.0.1:${port}`, { telemetry, defaultTimeoutMs: 2_000 });
  });

  afterEach(async () => {
    closeRpcClient(health);
    if (!shutDown) await server.shutdown();
  });

  it('answers SERVING for the server and each added service after listen', async () => {
    assert.equal((await health.check({ service: '' })).status, HealthCheckResponse_ServingStatus.SERVING);
    assert.equal((await health.check({ service: 'keymesh.limiter.v1.LimiterService' })).status, HealthCheckResponse_ServingStatus.SERVING);
  });

  it('answers NOT_FOUND for a service it does not serve', async () => {
    await assert.rejects(health.check({ service: 'keymesh.nope.v1.NopeService' }), (err: unknown) => err instanceof KeymeshError && err.code === Code.NotFound);
  });

  it('tells watchers NOT_SERVING when it shuts down, then stops answering', async () => {
    const statuses: HealthCheckResponse_ServingStatus[] = [];
    let shutdown: Promise<void> | undefined;
    for await (const response of health.watch({ service: '' })) {
      statuses.push(response.status);
      if (response.status === HealthCheckResponse_ServingStatus.SERVING) shutdown = server.shutdown();
      else break;
    }
    assert.deepEqual(statuses, [HealthCheckResponse_ServingStatus.SERVING, HealthCheckResponse_ServingStatus.NOT_SERVING]);
    await shutdown;
    shutDown = true;

    await assert.rejects(health.check({ service: '' }, { timeoutMs: 1_000 }), (err: unknown) => err instanceof KeymeshError && err.code === Code.Unavailable);
  });
});
