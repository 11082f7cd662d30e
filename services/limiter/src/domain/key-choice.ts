import type { KeySelection } from './types';

export const DEFAULT_KEY_SELECTION: KeySelection = 'headroom';

/**
 * The part of a window of `limit` (requests or tokens) that only high-priority
 * requests may use: ceil(share × limit), so at least that share stays free
 * for them. The product is rounded to 6 decimals first, so that 0.1 × 30
 * reserves 3 and not 4; lua/key-state.ts reservedOf computes the same, in
 * the same double arithmetic.
 */
export function reservedOf(limit: number, share: number): number {
  if (!(share > 0)) return 0;
  return Math.ceil(Math.floor(share * limit * 1e6 + 0.5) / 1e6);
}
