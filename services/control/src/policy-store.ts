import { createHash } from 'node:crypto';
import { compilePolicy, type KeymeshConfig } from '@keymesh/config';

export interface PolicyVersion {
  readonly version: bigint;
  readonly policyJson: string;
  /** sha256 of the validated config, to tell a real change from a re-apply of the same file. */
  readonly configDigest: string;
}

/**
 * The current policy. Versions come from the wall clock (ms) and only move
 * forward, so a restarted control plane still publishes versions that
 * services running the old one accept as newer.
 */
export class PolicyStore {
  private current: PolicyVersion | undefined;

  constructor(private readonly sealSecret: (plaintext: string) => string) {}

  get(): PolicyVersion | undefined {
    return this.current;
  }

  /** Makes the config current; undefined when it equals the current one. */
  apply(config: KeymeshConfig, nowMs: number = Date.now()): PolicyVersion | undefined {
    const configDigest = createHash('sha256').update(JSON.stringify(config)).digest('hex');
    if (this.current?.configDigest === configDigest) return undefined;
    const policyJson = JSON.stringify(compilePolicy(config, this.sealSecret));
    const floor = this.current ? this.current.version + 1n : 0n;
    const fromClock = BigInt(Math.floor(nowMs));
    this.current = { version: fromClock > floor ? fromClock : floor, policyJson, configDigest };
    return this.current;
  }
}
