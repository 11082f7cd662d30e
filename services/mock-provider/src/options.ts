import type { MockFailures, MockProviderOptions, WindowLimit } from './types';

/**
 * Checks options once at start and reports every problem with its path. Messages
 * name keys by index only: a secret never appears in an error.
 */
export function validateOptions(options: MockProviderOptions): void {
  const errors: string[] = [];
  if (options === null || typeof options !== 'object') throw new Error('mock provider options: expected an object');
  if (options.host !== undefined && typeof options.host !== 'string') errors.push('host: expected a string');
  checkInteger(errors, 'port', options.port, 0, 65535);
  checkInteger(errors, 'latencyMs', options.latencyMs, 0);
  checkInteger(errors, 'streamChunks', options.streamChunks, 1);
  checkInteger(errors, 'streamChunkDelayMs', options.streamChunkDelayMs, 0);
  if (options.now !== undefined && typeof options.now !== 'function') errors.push('now: expected a function');
  if (options.failures !== undefined) errors.push(...failureErrors(options.failures));

  if (!Array.isArray(options.keys)) {
    errors.push('keys: expected an array');
  } else {
    const seen = new Set<string>();
    options.keys.forEach((key, i) => {
      if (key === null || typeof key !== 'object') {
        errors.push(`keys[${i}]: expected an object`);
        return;
      }
      if (typeof key.secret !== 'string' || key.secret.length === 0) {
        errors.push(`keys[${i}].secret: expected a non-empty string`);
      } else if (seen.has(key.secret)) {
        errors.push(`keys[${i}].secret: same secret as an earlier key`);
      } else {
        seen.add(key.secret);
      }
      checkInteger(errors, `keys[${i}].quotaRequests`, key.quotaRequests, 0);
      if (key.limits !== undefined) errors.push(...limitErrors(key.limits, `keys[${i}].limits`));
    });
  }
  if (errors.length > 0) throw new Error(`mock provider options: ${errors.join('; ')}`);
}

export function limitErrors(limits: unknown, path: string): string[] {
  if (!Array.isArray(limits)) return [`${path}: expected an array`];
  const errors: string[] = [];
  limits.forEach((limit: WindowLimit, i) => {
    const at = `${path}[${i}]`;
    if (limit === null || typeof limit !== 'object') {
      errors.push(`${at}: expected an object`);
      return;
    }
    checkInteger(errors, `${at}.perMs`, limit.perMs, 1);
    if (limit.perMs === undefined) errors.push(`${at}.perMs: required`);
    checkInteger(errors, `${at}.requests`, limit.requests, 0);
    checkInteger(errors, `${at}.tokens`, limit.tokens, 0);
    if (limit.requests === undefined && limit.tokens === undefined) errors.push(`${at}: needs requests or tokens`);
  });
  return errors;
}

export function failureErrors(failures: MockFailures, path = 'failures'): string[] {
  if (failures === null || typeof failures !== 'object') return [`${path}: expected an object`];
  const errors: string[] = [];
  checkRate(errors, `${path}.errorRate`, failures.errorRate);
  checkRate(errors, `${path}.hangRate`, failures.hangRate);
  checkInteger(errors, `${path}.cutStreamAfterChunks`, failures.cutStreamAfterChunks, 0);
  return errors;
}

function checkInteger(errors: string[], path: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    errors.push(`${path}: expected an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? '' : ` to ${max}`}`);
  }
}

function checkRate(errors: string[], path: string, value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) errors.push(`${path}: expected a number from 0 to 1`);
}
