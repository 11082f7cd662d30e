const MS_PER_SECOND = 1000;
const MS_PER_MINUTE = 60 * MS_PER_SECOND;
const MS_PER_HOUR = 60 * MS_PER_MINUTE;

/**
 * Formats a duration the way OpenAI's `x-ratelimit-reset-*` headers do, which is
 * Go's `time.Duration.String()` at millisecond precision: `20ms`, `1s`, `1.5s`,
 * `1m30s`, `6m0s`, `2h0m0s`. Fractions of a millisecond round up so a client
 * waiting the printed time never arrives early.
 */
export function formatGoDuration(durationMs: number): string {
  const ms = Math.ceil(durationMs);
  if (ms <= 0) return '0s';
  if (ms < MS_PER_SECOND) return `${ms}ms`;
  const hours = Math.floor(ms / MS_PER_HOUR);
  const minutes = Math.floor((ms % MS_PER_HOUR) / MS_PER_MINUTE);
  const seconds = formatSeconds(ms % MS_PER_MINUTE);
  if (hours > 0) return `${hours}h${minutes}m${seconds}s`;
  if (minutes > 0) return `${minutes}m${seconds}s`;
  return `${seconds}s`;
}

function formatSeconds(ms: number): string {
  const whole = Math.floor(ms / MS_PER_SECOND);
  const fraction = ms % MS_PER_SECOND;
  if (fraction === 0) return String(whole);
  return `${whole}.${String(fraction).padStart(3, '0').replace(/0+$/, '')}`;
}
