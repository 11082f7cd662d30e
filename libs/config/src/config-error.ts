import type { z } from 'zod';

/**
 * Every problem found in one pass over a config (or policy) file. Each entry
 * names the file, the path inside it, and what was expected, e.g.
 * `keymesh.yaml: pools.main.keys[1].limits.per: expected a duration like "500ms", ...`.
 * No problem ever quotes a secret or a virtual key.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly problems: string[];

  constructor(problems: string[], options?: ErrorOptions) {
    super(problems.join('\n'), options);
    this.problems = problems;
  }
}

type PathSegment = PropertyKey;

// Names made only of these print bare after a dot; anything else (ids may hold "." and ":") is quoted.
const BARE_NAME = /^[A-Za-z0-9_-]+$/;

/** `routes.gpt-4o-mini.targets[0].pool`, `pools["eu.gpt"].provider`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string' && BARE_NAME.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

export function problemAt(sourceName: string, path: readonly PathSegment[], message: string): string {
  const where = formatPath(path);
  return where === '' ? `${sourceName}: ${message}` : `${sourceName}: ${where}: ${message}`;
}

/** Turns zod issues into problem lines. Unknown keys become one line per key. */
export function problemsFromIssues(sourceName: string, issues: readonly z.core.$ZodIssue[]): string[] {
  const out: string[] = [];
  for (const issue of issues) {
    if (issue.code === 'invalid_key') {
      const why = issue.issues.map((inner) => inner.message).join('; ');
      out.push(problemAt(sourceName, issue.path, `invalid name: ${why}`));
    } else if (issue.code === 'unrecognized_keys') {
      // describeIssue put one line per key, in the order of issue.keys.
      for (const line of issue.message.split('\n')) out.push(problemAt(sourceName, issue.path, line));
    } else {
      out.push(problemAt(sourceName, issue.path, issue.message));
    }
  }
  return out;
}

/** A value's kind in YAML words. Never the value itself: it may be a secret. */
export function describeKind(value: unknown): string {
  if (value === null) return 'an empty value (null)';
  if (Array.isArray(value)) return 'a list';
  switch (typeof value) {
    case 'string':
      return 'a string';
    case 'number':
      return Number.isInteger(value) ? 'a number' : 'a decimal number';
    case 'boolean':
      return 'a boolean';
    case 'object':
      return 'a mapping';
    default:
      return typeof value;
  }
}

const EXPECTED_WORDS: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
};

/** Edit distance counting a swap of neighbours as one edit ("mokc" is one from "mock"). Names are short. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** The closest candidate to a misspelt name, if one is close (also catches camelCase for snake_case). */
export function closestName(name: string, candidates: Iterable<string>): string | undefined {
  const squash = (s: string) => s.toLowerCase().replace(/[_-]/g, '');
  let best: string | undefined;
  let bestScore = Infinity;
  for (const candidate of candidates) {
    const score = squash(candidate) === squash(name) ? 0 : editDistance(name, candidate);
    if (score < bestScore) {
      best = candidate;
      bestScore = score;
    }
  }
  const limit = Math.max(1, Math.min(3, Math.floor(name.length / 3)));
  return bestScore <= limit ? best : undefined;
}

/**
 * The per-parse zod error map: plain-English messages for zod's generic
 * issues. Schemas that know better (durations, ids, URLs) set their own.
 */
export function describeIssue(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type': {
      const expected = EXPECTED_WORDS[issue.expected] ?? issue.expected;
      if (issue.input === undefined) return `missing required field (expected ${expected})`;
      return `expected ${expected}, got ${describeKind(issue.input)}`;
    }
    case 'unrecognized_keys': {
      const def = (issue.inst as { _zod?: { def?: { shape?: Record<string, unknown> } } } | undefined)?._zod?.def;
      const allowed = Object.keys(def?.shape ?? {});
      return issue.keys
        .map((key) => {
          const guess = closestName(key, allowed);
          const hint = guess !== undefined ? `did you mean "${guess}"?` : `expected one of: ${allowed.join(', ')}`;
          return `unknown key ${JSON.stringify(key)} (${hint})`;
        })
        .join('\n');
    }
    case 'invalid_value':
      return `expected ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}`;
    case 'too_small':
      if (issue.origin === 'array') return `expected at least ${issue.minimum} item${Number(issue.minimum) === 1 ? '' : 's'}`;
      if (issue.origin === 'string') return 'must not be empty';
      return `must be ${issue.inclusive ? 'at least' : 'greater than'} ${issue.minimum}`;
    case 'too_big':
      if (issue.origin === 'array') return `expected at most ${issue.maximum} items`;
      if (issue.origin === 'string') return `must be at most ${issue.maximum} characters`;
      return `must be ${issue.inclusive ? 'at most' : 'less than'} ${issue.maximum}`;
    default:
      return undefined;
  }
}
