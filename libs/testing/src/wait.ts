export interface WaitForOptions {
  timeoutMs: number;
  /** Pause between probes; default 25 ms. */
  intervalMs?: number;
  /** What is awaited, for the timeout message ("redis to answer PING"). */
  what: string;
}

/**
 * Calls `probe` until it returns something other than `undefined`, `null`
 * or `false`, and resolves with that value. A probe that throws counts as
 * "not yet"; its last error is attached as `cause` on timeout. Probes never
 * overlap, and the deadline holds even if a probe hangs.
 */
export async function waitFor<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  opts: WaitForOptions,
): Promise<T> {
  const intervalMs = opts.intervalMs ?? 25;
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  let attempts = 0;
  for (;;) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    attempts++;
    try {
      const value = await withDeadline(Promise.resolve().then(probe), remaining);
      if (value !== TIMED_OUT && value !== undefined && value !== null && value !== false) {
        return value as T;
      }
    } catch (err) {
      lastError = err;
    }
    const left = deadline - Date.now();
    if (left <= 0) break;
    await delay(Math.min(intervalMs, left));
  }
  const detail = lastError instanceof Error ? `; last error: ${lastError.message}` : '';
  throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what} (${attempts} attempts${detail})`, {
    cause: lastError,
  });
}

const TIMED_OUT: unique symbol = Symbol('timed out');

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
