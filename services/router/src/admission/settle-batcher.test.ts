import assert from 'node:assert/strict';
import type { LimiterService, SettleRequest } from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import { createLogger } from '@keymesh/telemetry';
import { SettleBatcher } from './settle-batcher';

describe('SettleBatcher', () => {
  it('sends the settles of one event-loop turn in one call', async () => {
    const calls: SettleRequest[] = [];
    const client = {
      settle: async (request: SettleRequest) => {
        calls.push(request);
        return {};
      },
    } as unknown as RpcClient<typeof LimiterService>;
    const batcher = new SettleBatcher(client, createLogger('settle-batcher-test'));
    for (let i = 0; i < 5; i++) batcher.settle({ poolId: 'p', keyId: 'k', admissionId: String(i), reservedTokens: 100, usedTokens: 10 });
    assert.equal(calls.length, 0, 'nothing is sent before the turn ends');
    await batcher.drain();
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0]!.settlements.map((s) => s.admissionId), ['0', '1', '2', '3', '4']);
    batcher.settle({ poolId: 'p', keyId: 'k', admissionId: '5', reservedTokens: 100, usedTokens: 10 });
    await batcher.drain();
    assert.equal(calls.length, 2);
  });

  it('logs a failed call and carries on: an unsettled reservation only admits less', async () => {
    const client = { settle: async () => Promise.reject(new Error('down')) } as unknown as RpcClient<typeof LimiterService>;
    const batcher = new SettleBatcher(client, createLogger('settle-batcher-test'));
    batcher.settle({ poolId: 'p', keyId: 'k', admissionId: '1', reservedTokens: 100, usedTokens: 10 });
    await batcher.drain();
  });
});
