export { startKeyVault } from './server';
export type { KeyVaultOptions, RunningKeyVault } from './server';
export { createSealer, generateMasterKey, masterKeyFromEnv } from './crypto/sealing';
export type { Sealer } from './crypto/sealing';
