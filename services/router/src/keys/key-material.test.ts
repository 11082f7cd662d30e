import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { ResolveKeysResponseSchema, type KeyVaultService } from '@keymesh/proto/keyvault/v1/keyvault';
import type { CallOptions, RpcClient } from '@keymesh/rpc';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { KeyMaterialCache } from './key-material';

/** A key-vault that takes `answerMs` to answer and, like a gRPC call, fails once its call's deadline passes first. */
function slowVault(answerMs: number): { client: RpcClient<typeof KeyVaultService>; calls: number } {
  const vault = {
    calls: 0,
    client: {
      resolveKeys: (_request: unknown, options: CallOptions) => {
        vault.calls++;
        const deadlineMs = options.deadlineMs ?? Date.now() + (options.timeoutMs ?? 30_000);
        return new Promise((resolve, reject) => {
          if (deadlineMs - Date.now() < answerMs) setTimeout(() => reject(new Error('DEADLINE_EXCEEDED')), Math.max(0, deadlineMs - Date.now()));
          else setTimeout(() => resolve(create(ResolveKeysResponseSchema, { keys: [{ keyId: 'k1', secret: 'sk-one' }] })), answerMs);
        });
      },
    } as unknown as RpcClient<typeof KeyVaultService>,
  };
  return vault;
}

describe('KeyMaterialCache', () => {
  it("fetches a pool's secrets once for every request that needs them meanwhile, whatever the first one's deadline", async () => {
    const vault = slowVault(100);
    const keys = new KeyMaterialCache(vault.client, 'router-token');
    // The first request could only wait 50 ms; it stops waiting at its own deadline (the dispatcher races it).
    const first = keys.secretOf('main', 'k1', ROOT_CONTEXT);
    const second = keys.secretOf('main', 'k1', ROOT_CONTEXT);
    assert.ok(first instanceof Promise && second instanceof Promise);
    assert.equal(await second, 'sk-one');
    assert.equal(await first, 'sk-one');
    assert.equal(vault.calls, 1);
    assert.equal(keys.secretOf('main', 'k1', ROOT_CONTEXT), 'sk-one', 'then served from memory');
  });
});
