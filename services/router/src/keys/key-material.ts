import { bearerMetadata, type RpcClient } from '@keymesh/rpc';
import type { KeyVaultService } from '@keymesh/proto/keyvault/v1/keyvault';
import type { Context } from '@opentelemetry/api';

/** How long a pool's secrets may take to arrive from the key-vault; a slower vault fails the fetch, and the next request asks again. */
const KEY_FETCH_TIMEOUT_MS = 5_000;

/**
 * The router's in-memory copy of key secrets, fetched from the key-vault a
 * pool at a time on first use and dropped when a key event or a new policy
 * says they changed. Secrets live only here and in the key-vault: they are
 * never logged, traced or put in an error.
 */
export class KeyMaterialCache {
  private readonly secrets = new Map<string, string>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private generation = 0;

  constructor(
    private readonly keyVault: RpcClient<typeof KeyVaultService>,
    /** The router's identity towards the key-vault. */
    routerToken: string,
  ) {
    this.authorization = bearerMetadata(routerToken);
  }

  private readonly authorization: Record<string, string>;

  /**
   * The secret of a key, or undefined when the vault has none for it (unset
   * env var, removed key). The fetch is shared by every request that needs
   * the pool meanwhile, so it runs to its own timeout, not to the first
   * one's deadline: each caller stops waiting at its own.
   */
  secretOf(poolId: string, keyId: string, parent: Context): string | undefined | Promise<string | undefined> {
    const secret = this.secrets.get(keyId);
    if (secret !== undefined) return secret;
    return this.fetchPool(poolId, parent).then(() => this.secrets.get(keyId));
  }

  /** Forget secrets (all when no ids are given); the next use fetches them again. */
  drop(keyIds?: readonly string[]): void {
    this.generation++;
    if (!keyIds || keyIds.length === 0) this.secrets.clear();
    else for (const id of keyIds) this.secrets.delete(id);
  }

  private fetchPool(poolId: string, parent: Context): Promise<void> {
    const existing = this.inFlight.get(poolId);
    if (existing) return existing;
    const generation = this.generation;
    const fetch = this.keyVault
      .resolveKeys({ poolId, keyIds: [] }, { timeoutMs: KEY_FETCH_TIMEOUT_MS, headers: this.authorization, parent })
      .then((response) => {
        // A drop that raced this fetch wins: the answer may predate it.
        if (generation !== this.generation) return;
        for (const key of response.keys) this.secrets.set(key.keyId, key.secret);
      })
      .finally(() => this.inFlight.delete(poolId));
    this.inFlight.set(poolId, fetch);
    return fetch;
  }
}
