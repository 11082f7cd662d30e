/**
 * One process-wide registry of things to tear down synchronously when the
 * test process exits (normally or on SIGINT/SIGTERM/SIGHUP): private servers,
 * spawned children, temp dirs. Handlers are installed once, on first use.
 */
type Teardown = () => void;

const pending = new Set<Teardown>();
let installed = false;

export function onExit(teardown: Teardown): () => void {
  install();
  pending.add(teardown);
  return () => {
    pending.delete(teardown);
  };
}

function runAll(): void {
  for (const teardown of [...pending]) {
    pending.delete(teardown);
    try {
      teardown();
    } catch {
      // best effort: the process is going away
    }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      runAll();
      // If nobody else handles this signal, restore the default (die by it).
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, handler);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, handler);
  }
}

/** Sends `signal` to a pid (negative for a process group), ignoring ESRCH. */
export function signalQuietly(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}
