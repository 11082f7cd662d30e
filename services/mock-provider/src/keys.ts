import { KeyLimits } from './limits/sliding-window';
import type { MockKeyOptions, MockKeyStats, WindowLimit } from './types';

export function emptyStats(): MockKeyStats {
  return { requests: 0, ok: 0, rateLimited: 0, unauthorized: 0, quotaExceeded: 0, failed: 0 };
}

export type Outcome = Exclude<keyof MockKeyStats, 'requests'>;

export class KeyState {
  revoked = false;
  /** Admitted requests so far, compared with `quotaRequests`. */
  quotaUsed = 0;
  limits: KeyLimits | undefined;
  readonly stats: MockKeyStats = emptyStats();
  readonly quotaRequests: number | undefined;
  /** Enforce limits but send no x-ratelimit-* headers until a request is refused. */
  readonly silentLimits: boolean;

  constructor(options: MockKeyOptions) {
    this.quotaRequests = options.quotaRequests;
    this.silentLimits = options.silentLimits === true;
    this.setLimits(options.limits);
  }

  setLimits(limits: readonly WindowLimit[] | undefined): void {
    this.limits = limits === undefined || limits.length === 0 ? undefined : new KeyLimits(limits);
  }

  get quotaExhausted(): boolean {
    return this.quotaRequests !== undefined && this.quotaUsed >= this.quotaRequests;
  }
}

/** Keys by secret, plus totals that also count requests no key could be found for. */
export class KeyRing {
  private readonly bySecret = new Map<string, KeyState>();
  private readonly ordered: KeyState[] = [];
  private totals: MockKeyStats = emptyStats();

  constructor(keys: readonly MockKeyOptions[]) {
    for (const options of keys) {
      const key = new KeyState(options);
      this.bySecret.set(options.secret, key);
      this.ordered.push(key);
    }
  }

  /** The key named by an `Authorization: Bearer <secret>` header, if any. */
  fromAuthorization(header: string | undefined): KeyState | undefined {
    if (header === undefined || header.length <= 7) return undefined;
    if (!header.startsWith('Bearer ') && header.slice(0, 7).toLowerCase() !== 'bearer ') return undefined;
    return this.bySecret.get(header.slice(7).trim());
  }

  /** Lookup by secret first, then by index; throws without repeating what it was given. */
  find(secretOrIndex: string): KeyState {
    const key = this.bySecret.get(secretOrIndex) ?? (/^\d+$/.test(secretOrIndex) ? this.ordered[Number(secretOrIndex)] : undefined);
    if (key === undefined) throw new Error('mock provider: no key with that secret or index');
    return key;
  }

  count(key: KeyState | undefined, outcome: Outcome | undefined): void {
    this.totals.requests += 1;
    if (outcome !== undefined) this.totals[outcome] += 1;
    if (key === undefined) return;
    key.stats.requests += 1;
    if (outcome !== undefined) key.stats[outcome] += 1;
  }

  stats(secretOrIndex: string | undefined): MockKeyStats {
    return { ...(secretOrIndex === undefined ? this.totals : this.find(secretOrIndex).stats) };
  }

  resetStats(): void {
    this.totals = emptyStats();
    for (const key of this.ordered) Object.assign(key.stats, emptyStats());
  }
}
