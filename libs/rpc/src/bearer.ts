import { createHash, timingSafeEqual } from 'node:crypto';
import type { CallContext } from './server';

/**
 * A shared secret a caller proves itself with (`authorization: Bearer …`).
 * Only its digest is kept, and presented tokens are compared by digest in
 * constant time, so neither the token's length nor its bytes leak through
 * timing, and a heap dump of the server does not hold it.
 */
export class BearerToken {
  private readonly digest: Buffer;

  constructor(token: string) {
    if (token.length === 0) throw new Error('a bearer token must not be empty');
    this.digest = sha256(token);
  }

  /** True when the call carries exactly this token. */
  presentedBy(ctx: CallContext): boolean {
    const header = ctx.header('authorization');
    if (!header?.startsWith('Bearer ')) return false;
    return timingSafeEqual(sha256(header.slice(7)), this.digest);
  }
}

/** The metadata a client sends to present `token`. */
export function bearerMetadata(token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` };
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
