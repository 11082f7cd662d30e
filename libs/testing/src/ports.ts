import { createServer } from 'node:net';

/**
 * Asks the kernel for a free TCP port on `host` (default 127.0.0.1) and
 * releases it. Another process can still take it before you bind it: for a
 * process that binds later, start it on port 0 and read back what it bound
 * (servingAddress, edgePort).
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port: 0, host, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error(`freePort: no TCP address for ${host}`));
        return;
      }
      server.close((err) => (err ? reject(err) : resolve(address.port)));
    });
  });
}
