/**
 * Brute-force reference checks for tests: deliberately naive, so they share no
 * cleverness (and no bug) with the sliding logs they check.
 */

/**
 * The most admissions any half-open interval [t, t + perMs) holds. Checking only
 * intervals that start at an admission is enough: any interval can slide right
 * to its first admission without losing one.
 */
export function maxInAnyInterval(timesMs: readonly number[], perMs: number): number {
  let max = 0;
  for (const startMs of timesMs) {
    let count = 0;
    for (const t of timesMs) if (t >= startMs && t < startMs + perMs) count++;
    if (count > max) max = count;
  }
  return max;
}

/** Admissions in the window that ends at nowMs, i.e. in (nowMs - perMs, nowMs]. */
export function countInWindow(timesMs: readonly number[], perMs: number, nowMs: number): number {
  let count = 0;
  for (const t of timesMs) if (t > nowMs - perMs && t <= nowMs) count++;
  return count;
}

/** A small seeded PRNG (mulberry32), so a failing random test replays exactly. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
