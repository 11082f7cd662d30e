const MAX_TIMEOUT_MS = 600_000;

/**
 * `x-keymesh-timeout`: milliseconds ("2500") or a duration ("2.5s", "500ms").
 * Anything else is ignored rather than failing the request.
 */
export function parseTimeoutHeader(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  const match = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text.trim());
  if (!match) return undefined;
  const ms = Number(match[1]) * (match[2] === 's' ? 1000 : 1);
  return ms > 0 ? Math.min(ms, MAX_TIMEOUT_MS) : undefined;
}
