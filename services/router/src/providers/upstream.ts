import { Pool, type Dispatcher } from 'undici';

/**
 * Keep-alive connections to one provider origin. Created when a policy names
 * the provider and reused across policy versions while its URL is unchanged.
 */
export class Upstream {
  private readonly pool: Pool;
  /** The base URL's path, e.g. "/v1"; adapter paths are appended to it. */
  readonly basePath: string;

  constructor(readonly baseUrl: string) {
    const url = new URL(baseUrl);
    this.basePath = url.pathname.replace(/\/$/, '');
    this.pool = new Pool(url.origin, {
      connections: 256,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      // Deadlines are enforced per request by the router; these only catch a
      // provider that accepted the socket and then went silent forever.
      headersTimeout: 300_000,
      bodyTimeout: 300_000,
    });
  }

  request(path: string, headers: Record<string, string>, body: string | Buffer, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    return this.pool.request({ method: 'POST', path: this.basePath + path, headers, body, signal });
  }

  get(path: string, headers: Record<string, string>, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    return this.pool.request({ method: 'GET', path: this.basePath + path, headers, signal });
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
