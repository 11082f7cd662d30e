import type { MessageInitShape } from '@bufbuild/protobuf';
import type { ConcurrencyHoldSchema, LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import type { Logger } from '@keymesh/telemetry';
import type { CancelSignal } from '../routing/cancellation';

type HoldMessage = MessageInitShape<typeof ConcurrencyHoldSchema>;

/** A request's hold on a slot of a key with a concurrency limit, from its Acquire answer. */
export interface HeldSlot {
  readonly poolId: string;
  readonly keyId: string;
  readonly holdId: string;
  readonly ttlMs: number;
  /** When this router next renews it: a third of its TTL after the grant or the last renewal. */
  renewAtMs: number;
  /** The request's abort listener, removed once the hold is released. */
  readonly onAbort: () => void;
  readonly signal: CancelSignal;
}

const MAX_BATCH = 512;
const CALL_TIMEOUT_MS = 2_000;

/**
 * The concurrency holds this router's requests have in flight: each is
 * released exactly once, at the end of its request (answered, failed, moved
 * to another key, cancelled, past its deadline: whichever comes first), and
 * renewed while its request runs (long streams), a third of its TTL after the
 * last renewal, so one lost renewal still leaves time for the next.
 *
 * Releases and renewals of one event-loop turn travel in one Release call, as
 * AcquireBatcher and SettleBatcher do: the number of calls is what the hot
 * path pays. A release that never arrives (the limiter is down, or this
 * process dies) costs the slot until the hold's TTL runs out, never more.
 */
export class HoldKeeper {
  private readonly held = new Set<HeldSlot>();
  private releases: HoldMessage[] = [];
  private renewals: HeldSlot[] = [];
  private scheduled = false;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewEveryMs = Number.POSITIVE_INFINITY;
  private readonly inFlight = new Set<Promise<void>>();

  /**
   * onReleased: told the pools whose slots a Release call freed, once the
   * limiter has them back, so requests waiting in line for them try now
   * rather than at their denial's retry-after (the holds' expiry).
   */
  constructor(
    private readonly limiter: RpcClient<typeof LimiterService>,
    private readonly logger: Logger,
    private readonly onReleased?: (poolIds: ReadonlySet<string>) => void,
  ) {}

  /**
   * Keeps a hold for a request until `release`, or until its signal aborts
   * (the caller left, the deadline passed): then it is released at once.
   * undefined when the request is already over, its hold given back.
   */
  hold(poolId: string, keyId: string, holdId: string, ttlMs: number, signal: CancelSignal): HeldSlot | undefined {
    if (signal.aborted) {
      this.queue({ poolId, keyId, holdId });
      return undefined;
    }
    const slot: HeldSlot = {
      poolId,
      keyId,
      holdId,
      ttlMs,
      renewAtMs: Date.now() + ttlMs / 3,
      signal,
      onAbort: () => this.release(slot),
    };
    signal.addEventListener('abort', slot.onAbort, { once: true });
    this.held.add(slot);
    this.scheduleRenewals(ttlMs);
    return slot;
  }

  /** Gives a hold back; only the first call for a slot counts. */
  release(slot: HeldSlot): void {
    if (!this.held.delete(slot)) return;
    slot.signal.removeEventListener('abort', slot.onAbort);
    this.queue({ poolId: slot.poolId, keyId: slot.keyId, holdId: slot.holdId });
    if (this.held.size === 0) this.stopRenewals();
  }

  /** Holds in flight, for tests and shutdown. */
  get size(): number {
    return this.held.size;
  }

  /** Releases every hold (router shutdown) and waits for the calls in flight. */
  async drain(): Promise<void> {
    for (const slot of [...this.held]) this.release(slot);
    this.flush();
    await Promise.all([...this.inFlight]);
  }

  private queue(hold: HoldMessage): void {
    this.releases.push(hold);
    this.schedule();
  }

  private schedule(): void {
    if (this.releases.length + this.renewals.length >= MAX_BATCH) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** One timer for all holds, ticking at a sixth of the shortest TTL: a hold is renewed within half its TTL. */
  private scheduleRenewals(ttlMs: number): void {
    const everyMs = Math.max(10, ttlMs / 6);
    if (this.renewTimer !== undefined && everyMs >= this.renewEveryMs) return;
    this.stopRenewals();
    this.renewEveryMs = everyMs;
    this.renewTimer = setInterval(() => this.renewDue(), everyMs);
    this.renewTimer.unref();
  }

  private stopRenewals(): void {
    if (this.renewTimer !== undefined) clearInterval(this.renewTimer);
    this.renewTimer = undefined;
    this.renewEveryMs = Number.POSITIVE_INFINITY;
  }

  private renewDue(): void {
    const nowMs = Date.now();
    for (const slot of this.held) {
      if (slot.renewAtMs > nowMs) continue;
      slot.renewAtMs = nowMs + slot.ttlMs / 3;
      this.renewals.push(slot);
    }
    if (this.renewals.length > 0) this.schedule();
  }

  private flush(): void {
    this.scheduled = false;
    const releases = this.releases;
    // A hold released since its renewal was queued needs no renewal.
    const renewals = this.renewals.filter((slot) => this.held.has(slot));
    if (releases.length === 0 && renewals.length === 0) return;
    this.releases = [];
    this.renewals = [];
    const call = this.limiter
      .release(
        { releases, renewals: renewals.map((s) => ({ poolId: s.poolId, keyId: s.keyId, holdId: s.holdId })) },
        { timeoutMs: CALL_TIMEOUT_MS },
      )
      .then(
        (response) => {
          if (releases.length > 0) this.onReleased?.(new Set(releases.map((h) => h.poolId ?? '')));
          // The limiter already let these go: their slots may be someone else's now.
          if (response.expiredRenewals.length > 0) {
            const expired = new Set(response.expiredRenewals.map((h) => `${h.poolId}\u0000${h.keyId}\u0000${h.holdId}`));
            for (const slot of renewals) if (expired.has(`${slot.poolId}\u0000${slot.keyId}\u0000${slot.holdId}`)) slot.renewAtMs = Number.POSITIVE_INFINITY;
            this.logger.warn('concurrency holds expired before their renewal; their requests run on uncounted', { count: response.expiredRenewals.length });
          }
        },
        (err: unknown) => {
          // Renewals are tried again on the next tick; releases lapse with their TTL.
          for (const slot of renewals) slot.renewAtMs = 0;
          this.logger.warn('could not release or renew concurrency holds with the limiter', { releases: releases.length, renewals: renewals.length, error: err as Error });
        },
      );
    this.inFlight.add(call);
    void call.finally(() => this.inFlight.delete(call));
  }
}
