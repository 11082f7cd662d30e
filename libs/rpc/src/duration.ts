import type { Duration } from '@bufbuild/protobuf/wkt';

/**
 * A non-negative span of milliseconds as a google.protobuf.Duration, to the
 * nanosecond. Spans here can be fractions of a millisecond (a burst window of
 * 3 per 7 s is 3000/7 ms), and nanos must stay a whole number below 1e9,
 * which protobuf-es's durationFromMs leaves to the caller.
 */
export function durationOfMs(ms: number): Pick<Duration, 'seconds' | 'nanos'> {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.round((ms - seconds * 1000) * 1e6);
  return nanos >= 1e9 ? { seconds: BigInt(seconds + 1), nanos: nanos - 1e9 } : { seconds: BigInt(seconds), nanos };
}

/**
 * A google.protobuf.Duration in milliseconds, fractions kept (protobuf-es's
 * durationMs rounds them away); undefined when the field is absent.
 */
export function msOfDuration(duration: Pick<Duration, 'seconds' | 'nanos'> | undefined): number | undefined {
  return duration ? Number(duration.seconds) * 1000 + duration.nanos / 1e6 : undefined;
}
