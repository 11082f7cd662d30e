import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startMockProvider, type MockProvider } from '@keymesh/mock-provider';
import { edgePort, spawnNode, waitFor, type ChildHandle } from '@keymesh/testing';
import { configYaml, secretOf, VIRTUAL_KEY } from './harness';

const KEYMESH_BIN = resolve(__dirname, '../../../services/cli/bin/keymesh.js');

async function modelIds(port: number): Promise<string[]> {
  const response = await fetch(`http://127.0.0.1:${port}/v1/models`, { headers: { authorization: `Bearer ${VIRTUAL_KEY}` } });
  const body = (await response.json()) as { data: { id: string }[] };
  return body.data.map((m) => m.id).sort();
}

describe('a running keymesh follows its config file', function () {
  this.timeout(60_000);
  let mock: MockProvider;
  let dir: string;
  let up: ChildHandle | undefined;

  beforeEach(async function () {
    mock = await startMockProvider({ keys: [0, 1, 2].map((i) => ({ secret: secretOf(i) })) });
    dir = await mkdtemp(join(tmpdir(), 'keymesh-reload-'));
  });
  afterEach(async function () {
    await up?.stop('SIGTERM', 5_000);
    up = undefined;
    await mock.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves a route added to the file without a restart, ignores an invalid edit, and never logs a secret', async function () {
    const configPath = join(dir, 'keymesh.yaml');
    await writeFile(configPath, configYaml(mock.url));
    up = spawnNode(KEYMESH_BIN, ['up', '--config', configPath], {
      env: { KEYMESH_HTTP_PORT: '0', KEYMESH_GRPC_PORT: '0', NATS_URL: undefined, KEYMESH_LOG_LEVEL: 'debug' },
    });
    const port = await edgePort(up);
    assert.ok(!(await modelIds(port)).includes('gpt-4o-extra'));

    await writeFile(configPath, 'routes: [ this is not valid');
    await up.waitForLine(/config not applied/, 10_000);
    assert.ok((await modelIds(port)).includes('gpt-4o-mini'), 'an invalid file must leave the running policy in place');

    await writeFile(configPath, configYaml(mock.url, { extraRoutes: '  gpt-4o-extra: { targets: [ { pool: main, model: gpt-4o } ] }' }));
    await waitFor(async () => (await modelIds(port)).includes('gpt-4o-extra') || undefined, { timeoutMs: 10_000, what: 'the new route to be served' });
    const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-extra', messages: [{ role: 'user', content: 'new route' }] }),
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-keymesh-model'), 'gpt-4o');

    const usage = await (await fetch(`http://127.0.0.1:${port}/v1/usage`, { headers: { authorization: `Bearer ${VIRTUAL_KEY}` } })).text();
    const output = up.output();
    for (const secret of [secretOf(0), secretOf(1), secretOf(2), VIRTUAL_KEY]) {
      assert.ok(!output.includes(secret), 'a secret reached the logs');
      assert.ok(!usage.includes(secret), 'a secret reached analytics');
    }
  });
});
