/**
 * Rate-limit headers as providers send them (shapes from the providers' docs
 * and recorded responses; values anonymized), for the limits.ts tests. Each
 * fixture's `atMs` is when it was received, so resets can be checked exactly.
 */
export interface HeaderFixture {
  readonly atMs: number;
  readonly status: number;
  readonly headers: Record<string, string>;
}

/** 2024-05-01T12:00:00Z */
const AT_MS = Date.UTC(2024, 4, 1, 12, 0, 0);

export const OPENAI_OK: HeaderFixture = {
  atMs: AT_MS,
  status: 200,
  headers: {
    'x-ratelimit-limit-requests': '10000',
    'x-ratelimit-limit-tokens': '2000000',
    'x-ratelimit-remaining-requests': '9999',
    'x-ratelimit-remaining-tokens': '1999976',
    'x-ratelimit-reset-requests': '6ms',
    'x-ratelimit-reset-tokens': '0s',
  },
};

export const OPENAI_429: HeaderFixture = {
  atMs: AT_MS,
  status: 429,
  headers: {
    'x-ratelimit-limit-requests': '60',
    'x-ratelimit-remaining-requests': '0',
    'x-ratelimit-reset-requests': '6m0s',
    'retry-after': '20',
    'retry-after-ms': '19500.5',
  },
};

export const ANTHROPIC_OK: HeaderFixture = {
  atMs: AT_MS,
  status: 200,
  headers: {
    'anthropic-ratelimit-requests-limit': '50',
    'anthropic-ratelimit-requests-remaining': '49',
    'anthropic-ratelimit-requests-reset': '2024-05-01T12:00:01Z',
    'anthropic-ratelimit-tokens-limit': '80000',
    'anthropic-ratelimit-tokens-remaining': '79000',
    'anthropic-ratelimit-tokens-reset': '2024-05-01T12:00:00.750Z',
    'anthropic-ratelimit-input-tokens-limit': '40000',
    'anthropic-ratelimit-input-tokens-remaining': '39500',
    'anthropic-ratelimit-input-tokens-reset': '2024-05-01T12:00:01.5Z',
    'anthropic-ratelimit-output-tokens-limit': '8000',
    'anthropic-ratelimit-output-tokens-remaining': '7500',
    'anthropic-ratelimit-output-tokens-reset': '2024-05-01T14:00:06+02:00',
  },
};

export const ANTHROPIC_429: HeaderFixture = {
  atMs: AT_MS,
  status: 429,
  headers: {
    'anthropic-ratelimit-requests-limit': '50',
    'anthropic-ratelimit-requests-remaining': '0',
    'anthropic-ratelimit-requests-reset': '2024-05-01T12:00:12Z',
    'retry-after': '12',
  },
};

export const AZURE_OK: HeaderFixture = {
  atMs: AT_MS,
  status: 200,
  headers: {
    'x-ratelimit-remaining-requests': '119',
    'x-ratelimit-remaining-tokens': '119480',
  },
};

export const AZURE_429: HeaderFixture = {
  atMs: AT_MS,
  status: 429,
  headers: {
    'x-ratelimit-remaining-requests': '0',
    'x-ratelimit-remaining-tokens': '0',
    'retry-after-ms': '1234',
    'retry-after': '2',
  },
};
