import assert from 'node:assert/strict';
import type { Policy } from '@keymesh/config';
import { createSealer, generateMasterKey } from '../crypto/sealing';
import { KeyVault } from './key-vault';

/** A policy with one env-sourced key: as it may arrive from the bus, whatever control checked. */
function policyWithEnvKey(name: string): Policy {
  return {
    keys: { k1: { id: 'k1', poolId: 'main', providerId: 'evil', secret: { kind: 'env', name }, limits: [] } },
  } as unknown as Policy;
}

describe('KeyVault', () => {
  it("never resolves one of keymesh's own variables (master key, router token) as a provider key", () => {
    const env = { KEYMESH_MASTER_KEY: 'the-master-key', KEYMESH_ROUTER_TOKEN: 'the-router-token', OPENAI_KEY_1: 'sk-provider' };
    const vault = new KeyVault(createSealer(generateMasterKey()), env);
    for (const name of ['KEYMESH_MASTER_KEY', 'KEYMESH_ROUTER_TOKEN']) {
      const { problems } = vault.apply(policyWithEnvKey(name));
      assert.deepEqual(problems, [`key k1: ${name} is one of keymesh's own variables, never a provider key`]);
      assert.equal(vault.resolve('main', ['k1'])[0]?.secret, undefined);
    }
    vault.apply(policyWithEnvKey('OPENAI_KEY_1'));
    assert.equal(vault.resolve('main', ['k1'])[0]?.secret, 'sk-provider');
  });
});
