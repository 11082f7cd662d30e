const { startMockProvider } = require('@keymesh/mock-provider');
const { spawn } = require('child_process');
const fs = require('fs');
(async () => {
  const mock = await startMockProvider({ keys: [{ secret: 'a1', limits: [{ requests: 20, perMs: 1800 }] }] });
  fs.writeFileSync('/tmp/lrdbg/c2.yaml', `
providers:
  mock: { kind: openai, base_url: ${mock.url} }
pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: a1, limits: { requests: 20, per: 2s } }
routes:
  exact: { targets: [ { pool: main, model: gpt-4o-mini } ] }
tenants:
  t: { virtual_keys: [ sk-keymesh-dbg ] }
`);
  const child = spawn('node', ['../services/cli/bin/keymesh.js', 'up', '--config', '/tmp/lrdbg/c2.yaml'], { env: { ...process.env, KEYMESH_HTTP_PORT: '18733', KEYMESH_GRPC_PORT: '0', REDIS_URL: 'redis://127.0.0.1:6379', KEYMESH_REDIS_PREFIX: 'lrdbg3-' + Date.now(), KEYMESH_LOG_LEVEL: 'warn' } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  while (!out.includes('keymesh is up')) await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 30; i++) {
    const t = Date.now();
    const r = await fetch('http://127.0.0.1:18733/v1/chat/completions', { method: 'POST', headers: { authorization: 'Bearer sk-keymesh-dbg', 'content-type': 'application/json' }, body: JSON.stringify({ model: 'exact', messages: [{ role: 'user', content: 'hi' }] }) });
    const body = await r.text();
    console.log(i, r.status, Date.now() - t, r.headers.get('retry-after'), r.status !== 200 ? body.slice(0, 150) : '');
  }
  child.kill('SIGTERM');
  await mock.close();
})();
