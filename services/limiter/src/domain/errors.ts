/**
 * Typed failures of the limiter domain. They carry a machine `reason` so the
 * gRPC handlers can map them to the shared KeymeshError (NOT_FOUND /
 * INVALID_ARGUMENT) without parsing messages; the domain itself stays free of
 * other @keymesh libs.
 */
export abstract class LimiterError extends Error {
  abstract readonly reason: string;
}

export class UnknownPoolError extends LimiterError {
  readonly reason = 'UNKNOWN_POOL';
  constructor(readonly poolId: string) {
    super(`unknown key pool "${poolId}"`);
    this.name = 'UnknownPoolError';
  }
}

export class UnknownKeyError extends LimiterError {
  readonly reason = 'UNKNOWN_KEY';
  constructor(
    readonly poolId: string,
    readonly keyId: string,
  ) {
    super(`unknown key "${keyId}" in pool "${poolId}"`);
    this.name = 'UnknownKeyError';
  }
}

export class InvalidPoolSpecError extends LimiterError {
  readonly reason = 'INVALID_POOL_SPEC';
  constructor(readonly problems: readonly string[]) {
    super(`invalid pool config: ${problems.join('; ')}`);
    this.name = 'InvalidPoolSpecError';
  }
}
