import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { KeyVaultService } from '@keymesh/proto/keyvault/v1/keyvault';
import type { BearerToken, ServiceImpl } from '@keymesh/rpc';
import type { Logger } from '@keymesh/telemetry';
import type { KeyVault } from './vault/key-vault';

export interface KeyVaultHandlerDeps {
  vault: KeyVault;
  /** The router's token; only its holder may resolve secrets. */
  routerToken: BearerToken;
  audit: Logger;
}

export function keyVaultHandlers(deps: KeyVaultHandlerDeps): ServiceImpl<typeof KeyVaultService> {
  return {
    async resolveKeys(request, ctx) {
      if (!deps.routerToken.presentedBy(ctx)) {
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
