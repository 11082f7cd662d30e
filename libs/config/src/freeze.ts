/** Freezes a tree of plain objects and arrays in place and returns it. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/**
 * A map keyed by ids from a file. No prototype, so a caller's lookup with an
 * untrusted name ("constructor", "toString") finds nothing instead of an
 * Object.prototype member.
 */
export function toRecord<T>(entries: Iterable<readonly [string, T]>): Record<string, T> {
  const out = Object.create(null) as Record<string, T>;
  for (const [key, value] of entries) out[key] = value;
  return out;
}

export function hasOwn(record: unknown, key: string): boolean {
  return record !== null && typeof record === 'object' && Object.hasOwn(record, key);
}

export function isPlainRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Paths to every "__proto__" key in a parsed tree. YAML and JSON parsers make
 * it an own key, but zod's records drop it silently, so it is rejected up front.
 */
export function findProtoKeys(value: unknown, path: PropertyKey[] = [], out: PropertyKey[][] = []): PropertyKey[][] {
  if (Array.isArray(value)) {
    value.forEach((item, i) => findProtoKeys(item, [...path, i], out));
  } else if (isPlainRecord(value)) {
    for (const key of Object.keys(value)) {
      if (key === '__proto__') out.push([...path, key]);
      else findProtoKeys(value[key], [...path, key], out);
    }
  }
  return out;
}
