/** The largest value a proto uint32 field holds. */
export const UINT32_MAX = 0xffff_ffff;

/**
 * A count for a uint32 field: at most UINT32_MAX. Encoding a larger one
 * throws, which would fail the whole message, a batch of other requests
 * with it; no limit is that large, so the clamped value decides the same.
 */
export function toUint32(value: number): number {
  return value > UINT32_MAX ? UINT32_MAX : value;
}
