/**
 * Durations in config are strings like "500ms", "30s", "5m", "1h", "1d" or
 * compounds like "1m30s". Units must appear largest first and at most once,
 * so "1s1m" or "1s1s" (almost always typos) are rejected instead of summed.
 */

const UNITS = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1_000],
  ['ms', 1],
] as const;

const UNIT_MS: ReadonlyMap<string, number> = new Map(UNITS);
const UNIT_RANK: ReadonlyMap<string, number> = new Map(UNITS.map(([unit], rank) => [unit, rank]));


export const DURATION_EXAMPLES = '"500ms", "1s", "1m", "1h", "1d"';

/** Parses a duration into milliseconds; throws an Error naming the input on bad input. Zero is allowed here; callers decide. */
export function parseDuration(text: string): number {
  const fail = (why: string): never => {
    throw new Error(`invalid duration ${JSON.stringify(text)}: ${why}`);
  };
  if (typeof text !== 'string' || text.length === 0) fail(`expected a duration like ${DURATION_EXAMPLES}`);
  // Sticky, and "ms" is tried before "m", or "500ms" would read as 500 minutes and a stray "s".
  const part = /(\d+)(ms|d|h|m|s)/y;
  let totalMs = 0;
  let lastRank = -1;
  while (part.lastIndex < text.length) {
    const match = part.exec(text);
    if (match === null) return fail(`expected a duration like ${DURATION_EXAMPLES}`);
    const digits = match[1]!;
    const unit = match[2]!;
    const rank = UNIT_RANK.get(unit)!;
    if (rank <= lastRank) return fail('units must go from largest to smallest, each at most once (e.g. "1h30m")');
    lastRank = rank;
    totalMs += Number(digits) * UNIT_MS.get(unit)!;
  }
  if (!Number.isSafeInteger(totalMs)) fail('too large');
  return totalMs;
}

/** Formats milliseconds as the compound form parseDuration reads back ("1m30s", "0ms"). Rounds to whole ms. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`cannot format ${ms} as a duration`);
  let rest = Math.round(ms);
  if (rest === 0) return '0ms';
  let out = '';
  for (const [unit, unitMs] of UNITS) {
    const n = Math.floor(rest / unitMs);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * unitMs;
    }
  }
  return out;
}
