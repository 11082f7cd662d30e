import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * AES-256-GCM sealing of key secrets under the master key. Control seals the
 * literal secrets of a config before the policy leaves it; only the key-vault,
 * which holds the same master key, can open them. The format is
 * `v1.<base64 iv|ciphertext|tag>`, so a later scheme can sit beside it.
 */
export interface Sealer {
  seal(plaintext: string): string;
  open(sealed: string): string;
}

export function createSealer(masterKey: Buffer): Sealer {
  if (masterKey.length !== 32) throw new Error('the master key must be 32 bytes (base64 of 32 random bytes)');
  return {
    seal(plaintext) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', masterKey, iv);
      const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return `${VERSION}.${Buffer.concat([iv, ciphertext, cipher.getAuthTag()]).toString('base64')}`;
    },
    open(sealed) {
      const [version, payload] = sealed.split('.', 2);
      if (version !== VERSION || !payload) throw new Error('unknown sealed secret format');
      const bytes = Buffer.from(payload, 'base64');
      if (bytes.length < IV_BYTES + TAG_BYTES) throw new Error('sealed secret is truncated');
      const decipher = createDecipheriv('aes-256-gcm', masterKey, bytes.subarray(0, IV_BYTES));
      decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
      return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)), decipher.final()]).toString('utf8');
    },
  };
}

/**
 * The master key from KEYMESH_MASTER_KEY (base64) or KEYMESH_MASTER_KEY_FILE.
 * Undefined when neither is set: `keymesh up` then makes an ephemeral one,
 * since in the embedded mode nothing sealed outlives the process.
 */
export async function masterKeyFromEnv(env: NodeJS.ProcessEnv = process.env): Promise<Buffer | undefined> {
  if (env.KEYMESH_MASTER_KEY) return Buffer.from(env.KEYMESH_MASTER_KEY, 'base64');
  if (env.KEYMESH_MASTER_KEY_FILE) {
    const { readFile } = await import('node:fs/promises');
    return Buffer.from((await readFile(env.KEYMESH_MASTER_KEY_FILE, 'utf8')).trim(), 'base64');
  }
  return undefined;
}

export function generateMasterKey(): Buffer {
  return randomBytes(32);
}
