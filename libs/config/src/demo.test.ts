import assert from 'node:assert/strict';
import { DEMO_CONFIG_YAML } from './demo';
import { parseConfig } from './load';
import { compilePolicy } from './policy';

describe('DEMO_CONFIG_YAML', () => {
  it('parses as a valid config', () => {
    const config = parseConfig(DEMO_CONFIG_YAML, 'demo.yaml');
    assert.deepEqual(Object.keys(config.routes), ['gpt-4o-mini', 'gpt-4o-mini-cached', 'text-embedding-3-small']);
    assert.deepEqual(config.routes['gpt-4o-mini-cached']!.cache, { ttlMs: 300_000 });
    assert.deepEqual(config.tenants['demo']!.virtualKeys, ['sk-keymesh-demo']);
    assert.equal(config.providers['mock']!.baseUrl, 'http://127.0.0.1:9000/v1');
    assert.deepEqual(
      config.pools['main']!.keys.map((key) => [key.id, key.limits]),
      ['k1', 'k2', 'k3'].map((id) => [id, [{ requests: 600, perMs: 60_000 }]]),
    );
    assert.ok(compilePolicy(config, (plaintext) => `sealed:${[...plaintext].reverse().join('')}`));
  });

  it('lets the bundled mock provider accept every key the demo pool uses, on the port the provider points at', () => {
    const config = parseConfig(DEMO_CONFIG_YAML, 'demo.yaml');
    const mock = config.mockProvider!;
    assert.equal(mock.port, 9000);
    assert.equal(new URL(config.providers['mock']!.baseUrl).port, String(mock.port));
    const mockSecrets = mock.keys.map((key) => (key.secret.kind === 'literal' ? key.secret.value : ''));
    assert.deepEqual(mockSecrets, ['mock-key-1', 'mock-key-2', 'mock-key-3']);
    for (const key of config.pools['main']!.keys) {
      assert.equal(key.secret.kind, 'literal');
      assert.ok(mockSecrets.includes(key.secret.kind === 'literal' ? key.secret.value : ''));
    }
  });
});
