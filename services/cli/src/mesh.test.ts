import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { freePort } from '@keymesh/testing';
import { startOnPreferredPort } from './mesh';

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

const portOf = (server: Server): number => (server.address() as { port: number }).port;

describe('keymesh up service ports', () => {
  it('uses the preferred port when it is free, and a free one when it is taken', async () => {
    const preferred = await freePort();
    const first = await startOnPreferredPort(preferred, listen);
    assert.equal(portOf(first), preferred);
    const second = await startOnPreferredPort(preferred, listen);
    assert.notEqual(portOf(second), preferred);
    await Promise.all([first, second].map((s) => new Promise((r) => s.close(r))));
  });

  it('does not hide other start-up failures', async () => {
    await assert.rejects(
      startOnPreferredPort(1, () => Promise.reject(new Error('the config is not valid'))),
      /the config is not valid/,
    );
  });
});
