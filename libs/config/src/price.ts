/** A target's price: USD per 1M tokens, so also micro-USD per token. */
export interface TokenPrice {
  readonly input: number;
  readonly output: number;
}

/**
 * What `promptTokens` in and `completionTokens` out cost at `price`, in whole
 * micro-USD, rounded up: usage events and cost quotas count integers, so
 * totals add up exactly and a quota never counts less than was spent (by
 * under one micro-USD per request). Rounding to a millionth of a micro-USD
 * first keeps float noise (20 × 0.15 = 3.0000000000000004) from adding one.
 */
export function costMicroUsd(price: TokenPrice, promptTokens: number, completionTokens: number): number {
  const exact = promptTokens * price.input + completionTokens * price.output;
  return Math.ceil(Math.round(exact * 1e6) / 1e6);
}

/** micro-USD as dollars for messages: "$100", "$0.000123". */
export function formatUsd(microUsd: number): string {
  return `$${(microUsd / 1e6).toFixed(6).replace(/\.?0+$/, '')}`;
}
