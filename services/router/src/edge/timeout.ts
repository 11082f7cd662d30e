import { KeymeshError } from '@keymesh/errors';

const MAX_TIMEOUT_MS = 600_000;
export const TIMEOUT_HEADER = 'x-keymesh-timeout';

/**
 * `x-keymesh-timeout`: milliseconds ("2500") or a duration ("2.5s", "500ms"),
 * more than zero; longer than 10 minutes counts as 10 minutes. Anything else
 * is a 400: a caller that asked for a deadline must not silently run under the
 * route's instead.
 */
export function parseTimeoutHeader(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text === '') return undefined;
  const match = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text.trim());
  const ms = match ? Number(match[1]) * (match[2] === 's' ? 1000 : 1) : Number.NaN;
  if (!(ms > 0)) {
    throw KeymeshError.invalidRequest(`${TIMEOUT_HEADER} must be a time more than zero, in milliseconds ("2500") or with a unit ("2.5s", "500ms")`, TIMEOUT_HEADER);
  }
  return Math.min(ms, MAX_TIMEOUT_MS);
}
