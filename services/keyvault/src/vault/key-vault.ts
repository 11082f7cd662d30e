import { createHash } from 'node:crypto';
import { isKeymeshVariable, type Policy } from '@keymesh/config';
import type { Sealer } from '../crypto/sealing';

export interface VaultKey {
  readonly keyId: string;
  readonly poolId: string;
  readonly providerId: string;
  /** Undefined when the key's env var is unset or its sealed secret cannot be opened. */
  readonly secret: string | undefined;
  readonly fingerprint: string;
  readonly source: string;
}

export function fingerprintOf(secret: string): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 12);
}

/**
 * The key set of one policy version, with secrets resolved: env vars read
 * from this process's environment, sealed literals opened with the master key.
 */
export class KeyVault {
  private keys = new Map<string, VaultKey>();

  constructor(
    private readonly sealer: Sealer,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  /** Swaps in the policy's keys; returns the ids whose secret or placement changed. */
  apply(policy: Policy): { changedKeyIds: string[]; problems: string[] } {
    const next = new Map<string, VaultKey>();
    const problems: string[] = [];
    for (const key of Object.values(policy.keys)) {
      let secret: string | undefined;
      let source: string;
      if (key.secret.kind === 'env') {
        source = `env:${key.secret.name}`;
        // Checked here too, not only in the config: the vault takes a policy from control, whatever checked it.
        if (isKeymeshVariable(key.secret.name)) {
          problems.push(`key ${key.id}: ${key.secret.name} is one of keymesh's own variables, never a provider key`);
        } else {
          secret = this.env[key.secret.name] || undefined;
          if (secret === undefined) problems.push(`key ${key.id}: environment variable ${key.secret.name} is not set`);
        }
      } else {
        source = 'literal';
        try {
          secret = this.sealer.open(key.secret.sealed);
        } catch {
          problems.push(`key ${key.id}: its sealed secret cannot be opened with this master key`);
        }
      }
      next.set(key.id, {
        keyId: key.id,
        poolId: key.poolId,
        providerId: key.providerId,
        secret,
        fingerprint: secret === undefined ? '' : fingerprintOf(secret),
        source,
      });
    }
    const changedKeyIds: string[] = [];
    for (const [id, key] of this.keys) {
      const now = next.get(id);
      if (!now || now.fingerprint !== key.fingerprint || now.poolId !== key.poolId) changedKeyIds.push(id);
    }
    this.keys = next;
    return { changedKeyIds, problems };
  }

  /** Keys of a pool (all of it when keyIds is empty) that have a secret. */
  resolve(poolId: string, keyIds: readonly string[]): VaultKey[] {
    const wanted = keyIds.length > 0 ? new Set(keyIds) : undefined;
    const found: VaultKey[] = [];
    for (const key of this.keys.values()) {
      if (key.poolId !== poolId || key.secret === undefined) continue;
      if (wanted && !wanted.has(key.keyId)) continue;
      found.push(key);
    }
    return found;
  }

  list(poolId: string): VaultKey[] {
    return [...this.keys.values()].filter((k) => poolId === '' || k.poolId === poolId);
  }
}
