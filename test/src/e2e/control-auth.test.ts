import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, KeymeshError } from '@keymesh/errors';
import { ControlService } from '@keymesh/proto/control/v1/control';
import { KeyVaultService } from '@keymesh/proto/keyvault/v1/keyvault';
import { bearerMetadata, closeRpcClient, type RpcClient } from '@keymesh/rpc';
import { waitFor } from '@keymesh/testing';
import { configYaml, runCli, secretOf, serviceClient, startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

const OPERATOR_TOKEN = 'operator-token-e2e-0123456789';
const EXTRA_ROUTE = '  gpt-4o-extra: { targets: [ { pool: main, model: gpt-4o } ] }';

async function modelIds(t: TestMesh): Promise<string[]> {
  const response = await fetch(`${t.baseUrl}/models`, { headers: { authorization: `Bearer ${VIRTUAL_KEY}` } });
  return ((await response.json()) as { data: { id: string }[] }).data.map((m) => m.id);
}

/** Asserts `call` fails with `code`, and that the message names none of `secrets`; returns the message. */
async function refusedWith(call: Promise<unknown>, code: Code, secrets: string[] = []): Promise<string> {
  let message = '';
  await assert.rejects(call, (err: unknown) => {
    assert.ok(err instanceof KeymeshError, String(err));
    assert.equal(err.code, code, err.message);
    assert.ok(!secrets.some((secret) => err.message.includes(secret)), 'the error names a secret');
    message = err.message;
    return true;
  });
  return message;
}

describe('who may change the policy and read key secrets', function () {
  this.timeout(30_000);
  let dir: string;

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'keymesh-control-auth-'));
  });
  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  describe('with KEYMESH_OPERATOR_TOKEN set', function () {
    let t: TestMesh;
    let control: RpcClient<typeof ControlService>;

    before(async function () {
      t = await startTestMesh({ env: { KEYMESH_OPERATOR_TOKEN: OPERATOR_TOKEN } });
      control = serviceClient(t, ControlService, 'control');
    });
    after(async function () {
      closeRpcClient(control);
      await t?.stop();
    });

    it('refuses a config from a caller without the operator token, and changes nothing', async function () {
      const yaml = configYaml(t.mock.url, { extraRoutes: EXTRA_ROUTE });
      await refusedWith(control.applyConfig({ configYaml: yaml, sourceName: 'x.yaml' }), Code.Unauthenticated);
      await refusedWith(control.applyConfig({ configYaml: yaml, sourceName: 'x.yaml' }, { headers: bearerMetadata(`${OPERATOR_TOKEN}-not`) }), Code.Unauthenticated, [OPERATOR_TOKEN]);
      assert.ok(!(await modelIds(t)).includes('gpt-4o-extra'));
    });

    it('applies a config from `keymesh apply` presenting the token, and the router serves it', async function () {
      const path = join(dir, 'extra.yaml');
      await writeFile(path, configYaml(t.mock.url, { extraRoutes: EXTRA_ROUTE }));

      const without = await runCli(t, ['apply', '--config', path]);
      assert.notEqual(without.code, 0);
      assert.match(without.stderr, /KEYMESH_OPERATOR_TOKEN/);

      const applied = await runCli(t, ['apply', '--config', path], { KEYMESH_OPERATOR_TOKEN: OPERATOR_TOKEN });
      assert.equal(applied.code, 0, applied.stderr);
      await waitFor(async () => (await modelIds(t)).includes('gpt-4o-extra') || undefined, { timeoutMs: 5_000, what: 'the applied route to be served' });
    });

    it('resolves key secrets only for the router', async function () {
      const vault = serviceClient(t, KeyVaultService, 'key-vault');
      try {
        for (const headers of [undefined, bearerMetadata(OPERATOR_TOKEN), bearerMetadata(VIRTUAL_KEY)]) {
          await refusedWith(vault.resolveKeys({ poolId: 'main', keyIds: [] }, headers ? { headers } : {}), Code.PermissionDenied, [0, 1, 2].map(secretOf));
        }
        // Listing is for operators: ids and fingerprints, never a secret.
        const listed = JSON.stringify(await vault.listKeys({ poolId: 'main' }), (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
        assert.ok(![0, 1, 2].some((i) => listed.includes(secretOf(i))));
      } finally {
        closeRpcClient(vault);
      }
    });
  });

  describe('without KEYMESH_OPERATOR_TOKEN', function () {
    let t: TestMesh;
    before(async function () {
      t = await startTestMesh();
    });
    after(async function () {
      await t?.stop();
    });

    it('keeps ApplyConfig off, whatever token a caller brings', async function () {
      const control = serviceClient(t, ControlService, 'control');
      try {
        const yaml = configYaml(t.mock.url, { extraRoutes: EXTRA_ROUTE });
        for (const headers of [undefined, bearerMetadata(''), bearerMetadata('anything')]) {
          const message = await refusedWith(control.applyConfig({ configYaml: yaml, sourceName: 'x.yaml' }, headers ? { headers } : {}), Code.FailedPrecondition);
          assert.match(message, /KEYMESH_OPERATOR_TOKEN/);
        }
        assert.ok(!(await modelIds(t)).includes('gpt-4o-extra'));
      } finally {
        closeRpcClient(control);
      }
    });
  });
});
