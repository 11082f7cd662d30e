import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/**
 * Raw-protocol liveness probes, so this library needs neither ioredis nor
 * nats. Each resolves false (never rejects) when nothing answers properly
 * within `timeoutMs`.
 */

/** Sends (AUTH and) PING to a redis:// or rediss:// URL; true on +PONG. */
export function redisAnswersPing(url: string, timeoutMs: number): Promise<boolean> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return Promise.resolve(false);
  }
  const host = target.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
  const port = Number(target.port || 6379);
  const commands: string[][] = [];
  if (target.password) {
    const password = decodeURIComponent(target.password);
    commands.push(target.username ? ['AUTH', decodeURIComponent(target.username), password] : ['AUTH', password]);
  }
  commands.push(['PING']);
  const request = commands.map(encodeResp).join('');
  const replies = commands.length;
  return exchange(target.protocol === 'rediss:', host, port, timeoutMs, request, (received) => {
    const lines = received.split('\r\n');
    if (lines.length <= replies) return undefined; // not all replies complete yet
    return lines[replies - 1] === '+PONG';
  });
}

/** Connects to a nats:// URL (first of a comma list); true once the server sends INFO. */
export function natsSendsInfo(url: string, timeoutMs: number): Promise<boolean> {
  const first = url.split(',')[0]!.trim();
  let target: URL;
  try {
    target = new URL(/^[a-z]+:\/\//i.test(first) ? first : `nats://${first}`);
  } catch {
    return Promise.resolve(false);
  }
  const host = target.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
  const port = Number(target.port || 4222);
  return exchange(false, host, port, timeoutMs, '', (received) => {
    const end = received.indexOf('\r\n');
    if (end < 0) return received.length > 5 && !received.startsWith('INFO ') ? false : undefined;
    return received.startsWith('INFO ');
  });
}

function encodeResp(args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
}

function exchange(
  tls: boolean,
  host: string,
  port: number,
  timeoutMs: number,
  request: string,
  verdict: (received: string) => boolean | undefined,
): Promise<boolean> {
  return new Promise((resolve) => {
    let received = '';
    let done = false;
    const socket: Socket = tls
      ? tlsConnect({ host, port, servername: host })
      : netConnect({ host, port });
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.setNoDelay(true);
    socket.once(tls ? 'secureConnect' : 'connect', () => {
      if (request) socket.write(request);
    });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      const result = verdict(received);
      if (result !== undefined) finish(result);
    });
    socket.once('error', () => finish(false));
    socket.once('close', () => finish(false));
  });
}
