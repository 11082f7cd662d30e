import { timingSafeEqual, createHash } from 'node:crypto';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { KeyVaultService } from '@keymesh/proto/keyvault/v1/keyvault';
import type { CallContext, ServiceImpl } from '@keymesh/rpc';
import type { Logger } from '@keymesh/telemetry';
import type { KeyVault } from './vault/key-vault';

export interface KeyVaultHandlerDeps {
  vault: KeyVault;
  /** sha256 of the router's token; only its holder may resolve secrets. */
  routerTokenSha256: Buffer;
  audit: Logger;
}

function isRouter(ctx: CallContext, expected: Buffer): boolean {
  const header = ctx.header('authorization');
  if (!header?.startsWith('Bearer ')) return false;
  const presented = createHash('sha256').update(header.slice(7)).digest();
  return timingSafeEqual(presented, expected);
}

export function keyVaultHandlers(deps: KeyVaultHandlerDeps): ServiceImpl<typeof KeyVaultService> {
  return {
    async resolveKeys(request, ctx) {
      if (!isRouter(ctx, deps.routerTokenSha256)) {
        deps.audit.warn('key resolve refused', { poolId: request.poolId, reason: 'caller is not the router' });
        throw new KeymeshError({ code: Code.PermissionDenied, reason: Reason.PERMISSION_DENIED, message: 'only the router may resolve key secrets' });
      }
      const keys = deps.vault.resolve(request.poolId, request.keyIds);
      // The audit trail names keys by id and fingerprint, never by secret.
      deps.audit.info('keys resolved', { poolId: request.poolId, keyIds: keys.map((k) => k.keyId), fingerprints: keys.map((k) => k.fingerprint) });
      return {
        keys: keys.map((k) => ({ keyId: k.keyId, poolId: k.poolId, providerId: k.providerId, secret: k.secret ?? '' })),
      };
    },
    async listKeys(request) {
      return {
        keys: deps.vault.list(request.poolId).map((k) => ({
          keyId: k.keyId,
          poolId: k.poolId,
          providerId: k.providerId,
          fingerprint: k.fingerprint,
          source: k.source,
          available: k.secret !== undefined,
        })),
      };
    },
  };
}
