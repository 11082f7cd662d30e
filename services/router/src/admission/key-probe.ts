import type { LimitSnapshot } from '../providers';

/**
 * What a request that waited at a key whose limit nobody has stated yet does:
 * 'go' (the probe's answer leaves room for it), 'probe' (the probe got no
 * answer and this request probes in its place: it must settle the probe like
 * the first one), 'readmit' (ask the limiter again: the slot was granted
 * before it knew the limit), or 'full' (the probe's own headers said nothing
 * is left).
 */
export type GateAnswer =
  | { readonly kind: 'go' }
  | { readonly kind: 'probe' }
  | { readonly kind: 'readmit' }
  | { readonly kind: 'full'; readonly retryAfterMs: number };

const GO: GateAnswer = Object.freeze({ kind: 'go' });
const PROBE: GateAnswer = Object.freeze({ kind: 'probe' });
const READMIT: GateAnswer = Object.freeze({ kind: 'readmit' });
/** When a probe's answer said the key is full but not until when. */
const FULL_RETRY_MS = 1_000;

interface Probe {
  /** Resolves when the probe's answer arrived (or it got none). */
  readonly answered: Promise<void>;
  readonly answer: () => void;
  /** Resolves once the limiter has heard what the answer taught. */
  readonly learned: Promise<void>;
  readonly learn: () => void;
  settled: boolean;
  gotAnswer: boolean;
  /** How many of the waiters may follow: the answer's remaining count; undefined when it said none. */
  allowance: number | undefined;
  /** Requests waiting for the answer. */
  waiting: number;
  resetAtMs: number | undefined;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = (): void => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * One request at a time to a key whose limit the config doesn't state, until
 * its first answer: without this, a burst at startup would all reach a key
 * whose limit nobody knows yet and earn a 429 each beyond it.
 *
 * The first request (the probe) goes; requests arriving while it is out wait
 * for its answer and then go as far as the remaining count it brought, the
 * rest try another key. Slots the limiter granted before it learned the
 * limit are in no window, so from the answer until the limiter has heard it
 * (confirm), newcomers wait and then ask the limiter again. The waiters that
 * follow the probe are subtracted from the remaining count the limiter
 * hears (see settle), so they are counted too.
 */
export class KeyProbes {
  private readonly probes = new Map<string, Probe>();
  /** Keys that answered (and the limiter heard it) since the last policy. */
  private readonly known = new Set<string>();
  private isDeclared: (poolId: string, keyId: string) => boolean = () => false;

  gate(poolId: string, keyId: string, nowMs: () => number = Date.now): 'go' | 'probe' | Promise<GateAnswer> {
    const id = `${poolId}\u0000${keyId}`;
    if (this.known.has(id) || this.isDeclared(poolId, keyId)) return 'go';
    const probe = this.probes.get(id);
    if (probe === undefined) {
      const answered = deferred();
      const learned = deferred();
      this.probes.set(id, {
        answered: answered.promise, answer: answered.resolve, learned: learned.promise, learn: learned.resolve,
        settled: false, gotAnswer: false, allowance: undefined, waiting: 0, resetAtMs: undefined,
      });
      return 'probe';
    }
    if (probe.settled) return probe.learned.then(() => READMIT);
    probe.waiting++;
    return probe.answered.then((): GateAnswer | Promise<GateAnswer> => {
      if (!probe.gotAnswer) {
        // No answer (timeout, the caller left): the next waiter probes in its place.
        const next = this.gate(poolId, keyId, nowMs);
        return next === 'probe' ? PROBE : next === 'go' ? GO : next;
      }
      if (probe.allowance === undefined) return GO;
      if (probe.allowance <= 0) {
        return { kind: 'full', retryAfterMs: probe.resetAtMs === undefined ? FULL_RETRY_MS : Math.max(1, probe.resetAtMs - nowMs()) };
      }
      probe.allowance--;
      return GO;
    });
  }

  /**
   * The probe's call ended, with the response's rate-limit headers, or with no
   * answer at all. Its waiters go on at once. Returns the headers to teach
   * the limiter: the remaining count less the waiters about to spend it.
   * After an answer, call confirm once the limiter has heard.
   */
  settle(poolId: string, keyId: string, limits: LimitSnapshot | undefined, gotAnswer: boolean): LimitSnapshot | undefined {
    const id = `${poolId}\u0000${keyId}`;
    const probe = this.probes.get(id);
    if (probe === undefined || probe.settled) return limits;
    probe.settled = true;
    probe.gotAnswer = gotAnswer;
    if (!gotAnswer) this.probes.delete(id);
    probe.allowance = limits?.remainingRequests;
    probe.resetAtMs = limits?.requestsResetAtMs;
    probe.answer();
    if (!gotAnswer || limits?.remainingRequests === undefined) return limits;
    return { ...limits, remainingRequests: limits.remainingRequests - Math.min(limits.remainingRequests, probe.waiting) };
  }

  /** The limiter has heard (or could not be told) what the probe's answer taught: the key is known. */
  confirm(poolId: string, keyId: string): void {
    const id = `${poolId}\u0000${keyId}`;
    const probe = this.probes.get(id);
    this.known.add(id);
    if (probe === undefined) return;
    this.probes.delete(id);
    probe.learn();
  }

  /** A new policy may have replaced keys. `isDeclared` tells the keys whose limits the config states. */
  reset(isDeclared?: (poolId: string, keyId: string) => boolean): void {
    if (isDeclared !== undefined) this.isDeclared = isDeclared;
    this.known.clear();
    for (const probe of this.probes.values()) {
      probe.answer();
      probe.learn();
    }
    this.probes.clear();
  }
}
