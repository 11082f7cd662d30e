import { spawn } from 'node:child_process';
import { onExit, signalQuietly } from './cleanup';

export interface ChildHandle {
  pid: number;
  /** stdout and stderr so far, interleaved as received (the last 8 MiB). */
  output(): string;
  /**
   * Resolves with the match for the first output line (stdout or stderr,
   * already printed or yet to come) matching `re`; rejects on timeout or if
   * the process exits first, quoting the output's tail.
   */
  waitForLine(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /**
   * Sends `signal` (default SIGTERM) to the whole process group, SIGKILLs the
   * group after `timeoutMs` (default 5000), then sweeps leftovers. Resolves
   * with the exit code, null when killed by a signal.
   */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

export interface SpawnNodeOptions {
  /** Merged over process.env; `undefined` removes a variable. */
  env?: Record<string, string | undefined>;
  cwd?: string;
}

const MAX_OUTPUT_CHARS = 8 * 1024 * 1024;
const TAIL_CHARS = 2000;

interface LineWaiter {
  re: RegExp;
  resolve: (match: RegExpMatchArray) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Runs `node scriptPath ...args` in its own process group, capturing output. */
export function spawnNode(scriptPath: string, args: string[], opts: SpawnNodeOptions = {}): ChildHandle {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [key, value] of Object.entries(opts.env ?? {})) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  const child = spawn(process.execPath, [scriptPath, ...args], {
    cwd: opts.cwd,
    env,
    detached: true, // own process group, so stop() reaches grandchildren
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let spawnError: Error | undefined;
  child.on('error', (err) => {
    spawnError = err;
  });
  if (child.pid === undefined) {
    throw new Error(`could not spawn node ${scriptPath}${opts.cwd ? ` in ${opts.cwd}` : ''}`);
  }
  const pid = child.pid;
  const label = `node ${scriptPath}`;

  let output = '';
  let lines: string[] = [];
  const waiters = new Set<LineWaiter>();
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  const tail = (): string => {
    const t = output.slice(-TAIL_CHARS);
    return t ? `\n--- output tail ---\n${t}` : ' (no output)';
  };
  const notPrinted = (re: RegExp): Error => {
    const status = exit?.signal ? `signal ${exit.signal}` : `code ${exit?.code}`;
    return new Error(`${label} exited (${status}) before printing a line matching ${re}${tail()}`);
  };
  const finish = (waiter: LineWaiter): void => {
    clearTimeout(waiter.timer);
    waiters.delete(waiter);
  };
  const onLine = (line: string): void => {
    lines.push(line);
    if (lines.length > 100_000) lines = lines.slice(-50_000);
    for (const waiter of [...waiters]) {
      const match = line.match(waiter.re);
      if (match) {
        finish(waiter);
        waiter.resolve(match);
      }
    }
  };
  const capture = (stream: NodeJS.ReadableStream): (() => void) => {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      output += chunk;
      if (output.length > MAX_OUTPUT_CHARS) output = output.slice(-MAX_OUTPUT_CHARS / 2);
      const parts = (partial + chunk).split('\n');
      partial = parts.pop()!;
      for (const part of parts) onLine(part.replace(/\r$/, ''));
    });
    return () => {
      if (partial) onLine(partial.replace(/\r$/, ''));
      partial = '';
    };
  };
  const flushStdout = capture(child.stdout!);
  const flushStderr = capture(child.stderr!);

  const forget = onExit(() => {
    signalQuietly(-pid, 'SIGKILL');
  });

  // 'close' fires after both pipes end, so every line has been seen.
  const closed = new Promise<void>((resolve) => {
    child.once('close', (code, signal) => {
      flushStdout();
      flushStderr();
      exit = { code, signal };
      if (spawnError) output += `\n[spawn error: ${spawnError.message}]`;
      for (const waiter of [...waiters]) {
        finish(waiter);
        waiter.reject(notPrinted(waiter.re));
      }
      resolve();
    });
  });

  return {
    pid,
    output: () => output,
    waitForLine(re, timeoutMs) {
      // A stateful (g/y) regex would skip matches between calls.
      const pattern = re.global || re.sticky ? new RegExp(re.source, re.flags.replace(/[gy]/g, '')) : re;
      for (const line of lines) {
        const match = line.match(pattern);
        if (match) return Promise.resolve(match);
      }
      if (exit) {
        return Promise.reject(notPrinted(pattern));
      }
      return new Promise((resolve, reject) => {
        const waiter: LineWaiter = {
          re: pattern,
          resolve,
          reject,
          timer: setTimeout(() => {
            finish(waiter);
            reject(new Error(`timed out after ${timeoutMs} ms waiting for ${label} to print a line matching ${re}${tail()}`));
          }, timeoutMs),
        };
        waiters.add(waiter);
      });
    },
    async stop(signal = 'SIGTERM', timeoutMs = 5000) {
      if (!exit) {
        signalQuietly(-pid, signal);
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), timeoutMs);
        });
        const escalate = await Promise.race([closed.then(() => false), timedOut]);
        clearTimeout(timer);
        if (escalate) {
          signalQuietly(-pid, 'SIGKILL');
          await closed;
        }
      }
      signalQuietly(-pid, 'SIGKILL'); // sweep grandchildren left in the group
      forget();
      return exit!.code;
    },
  };
}
