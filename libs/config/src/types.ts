/** A window the limiter enforces: at most `requests` admissions in any interval of `perMs`. */
export interface WindowLimit {
  readonly requests: number;
  readonly perMs: number;
}

/** A token window: at most `tokens` tokens over the requests of any interval of `perMs`. */
export interface TokenWindowLimit {
  readonly tokens: number;
  readonly perMs: number;
}

/** Where a provider key's secret comes from, as the config file says it. */
export type ConfigSecret = { readonly kind: 'literal'; readonly value: string } | { readonly kind: 'env'; readonly name: string };

export type DeepReadonly<T> = T extends (infer U)[]
  ? readonly DeepReadonly<U>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;
