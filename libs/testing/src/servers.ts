import { readFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './binaries';
import { onExit, signalQuietly } from './cleanup';
import { freePort } from './ports';
import { natsSendsInfo, redisAnswersPing } from './probes';
import { delay } from './wait';

export interface ExternalServer {
  url: string;
  port: number;
  /** True when this process started the server (and stop() kills it). */
  private: boolean;
  /** Kills a private server and removes its temp dir; a no-op for shared servers. */
  stop(): Promise<void>;
}

export interface PrivateServer extends ExternalServer {
  /** SIGSTOP: the server keeps its sockets but answers nothing. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** SIGKILL, as a crash would; restart() brings it back on the same port and data dir. */
  kill(): Promise<void>;
  /** Stops the server if running (gracefully, SIGKILL after 5 s) and starts it again on the same port. */
  restart(): Promise<void>;
}

/** How long a shared server gets to answer before we start our own. */
const SHARED_PROBE_MS = 500;
/** Total budget for a private server to become ready. */
const READY_DEADLINE_MS = 10_000;
const READY_RETRY_MS = 20;
const GRACEFUL_STOP_MS = 5_000;
const PORT_ATTEMPTS = 3;

interface ServerKind {
  binary: string;
  debianPackage: string;
  scheme: string;
  args(port: number, dir: string): string[];
  ready(url: string, timeoutMs: number): Promise<boolean>;
}

const REDIS: ServerKind = {
  binary: 'redis-server',
  debianPackage: 'redis-server',
  scheme: 'redis',
  args: (port, dir) => [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
  ],
  ready: redisAnswersPing,
};

const NATS: ServerKind = {
  binary: 'nats-server',
  debianPackage: 'nats-server',
  scheme: 'nats',
  args: (port, dir) => ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir],
  ready: natsSendsInfo,
};

/** The Redis at REDIS_URL (default redis://127.0.0.1:6379) if it answers PING within ~500 ms, else a private one. */
export function redisForTests(): Promise<ExternalServer> {
  return sharedOrPrivate(REDIS, process.env['REDIS_URL'] || 'redis://127.0.0.1:6379');
}

/** The NATS at NATS_URL (default nats://127.0.0.1:4222) if it accepts a connection within ~500 ms, else a private one with JetStream. */
export function natsForTests(): Promise<ExternalServer> {
  return sharedOrPrivate(NATS, process.env['NATS_URL'] || 'nats://127.0.0.1:4222');
}

/** Always a private redis-server on 127.0.0.1, for tests that pause, kill or flood it. */
export function startPrivateRedis(): Promise<PrivateServer> {
  return startPrivate(REDIS);
}

/** Always a private `nats-server -js` on 127.0.0.1 with its own store dir. */
export function startPrivateNats(): Promise<PrivateServer> {
  return startPrivate(NATS);
}

async function sharedOrPrivate(kind: ServerKind, url: string): Promise<ExternalServer> {
  if (await kind.ready(url, SHARED_PROBE_MS)) {
    return { url, port: portOf(url, kind), private: false, stop: async () => {} };
  }
  return startPrivate(kind);
}

function portOf(url: string, kind: ServerKind): number {
  const first = url.split(',')[0]!.trim();
  const parsed = new URL(first.includes('://') ? first : `${kind.scheme}://${first}`);
  return Number(parsed.port || (kind === REDIS ? 6379 : 4222));
}

async function startPrivate(kind: ServerKind): Promise<PrivateServer> {
  const binary = findBinary(kind.binary, kind.debianPackage);
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
    const server = new PrivateProcess(kind, binary, await freePort());
    try {
      await server.start();
      return server;
    } catch (err) {
      await server.stop();
      lastError = err as Error;
      if (!(err instanceof PortTakenError)) throw err;
    }
  }
  throw lastError!;
}

class PortTakenError extends Error {}

class PrivateProcess implements PrivateServer {
  readonly url: string;
  readonly private = true;
  private readonly dir: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private output = '';
  private stopped = false;
  private readonly forget: () => void;

  constructor(private readonly kind: ServerKind, private readonly binary: string, readonly port: number) {
    this.url = `${kind.scheme}://127.0.0.1:${port}`;
    this.dir = mkdtempSync(join(tmpdir(), `keymesh-${kind.binary}-`));
    this.forget = onExit(() => {
      if (this.child?.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null) {
        signalQuietly(this.child.pid, 'SIGKILL');
      }
      rmSync(this.dir, { recursive: true, force: true });
    });
  }

  async start(): Promise<void> {
    if (this.stopped) throw new Error(`${this.kind.binary} on port ${this.port} was stopped; start a new one`);
    this.output = '';
    const child = spawn(this.binary, this.kind.args(this.port, this.dir), {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    const capture = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString('utf8')).slice(-8192);
    };
    child.stdout!.on('data', capture);
    child.stderr!.on('data', capture);
    let exitInfo: string | undefined;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        resolve();
      });
      child.once('error', (err) => {
        exitInfo = `spawn error: ${err.message}`;
        resolve();
      });
    });
    const deadline = Date.now() + READY_DEADLINE_MS;
    for (;;) {
      if (exitInfo !== undefined) {
        const message = `${this.kind.binary} on port ${this.port} exited before ready (${exitInfo}): ${this.output.trim()}`;
        throw /address already in use/i.test(this.output) ? new PortTakenError(message) : new Error(message);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${this.kind.binary} on port ${this.port} not ready after ${READY_DEADLINE_MS} ms: ${this.output.trim()}`);
      }
      if (await this.kind.ready(this.url, Math.min(200, left))) return;
      await Promise.race([delay(READY_RETRY_MS), this.exited]);
    }
  }

  pause(): void {
    this.signal('SIGSTOP');
    // Signals are delivered asynchronously: return only once the kernel shows
    // the process stopped, so a caller's next probe really meets a paused server.
    const pid = this.child?.pid;
    if (pid === undefined) return;
    const until = Date.now() + 2_000;
    while (Date.now() < until && processState(pid) !== 'T') Atomics.wait(PAUSE_WAIT, 0, 0, 5);
  }

  resume(): void {
    this.signal('SIGCONT');
  }

  async kill(): Promise<void> {
    this.signal('SIGKILL');
    await this.exited;
  }

  async restart(): Promise<void> {
    if (this.running()) {
      this.signal('SIGTERM');
      this.signal('SIGCONT'); // a paused server cannot act on SIGTERM
      const graceful = await Promise.race([this.exited.then(() => true), delay(GRACEFUL_STOP_MS).then(() => false)]);
      if (!graceful) await this.kill();
    }
    await this.start();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.signal('SIGKILL');
    await this.exited;
    rmSync(this.dir, { recursive: true, force: true });
    this.forget();
  }

  private running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  private signal(signal: NodeJS.Signals): void {
    if (this.child?.pid !== undefined && this.running()) signalQuietly(this.child.pid, signal);
  }
}

const PAUSE_WAIT = new Int32Array(new SharedArrayBuffer(4));

/** The state letter from /proc/<pid>/stat (R, S, T, Z…), or undefined when unreadable. */
function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}
