import type { MessageInitShape } from '@bufbuild/protobuf';
import type { LimiterService, SettlementSchema } from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import type { Logger } from '@keymesh/telemetry';

const MAX_BATCH = 512;

/**
 * Sends the settles of one event-loop turn in one Settle call, as
 * AcquireBatcher does for admissions: a unary call per request would cost
 * about as much CPU as the whole proxy path. A settle is best effort: one
 * that never arrives leaves the estimate reserved, which only ever errs on
 * the side of fewer admissions.
 */
export class SettleBatcher {
  private pending: MessageInitShape<typeof SettlementSchema>[] = [];
  private scheduled = false;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly limiter: RpcClient<typeof LimiterService>,
    private readonly logger: Logger,
  ) {}

  settle(settlement: MessageInitShape<typeof SettlementSchema>): void {
    this.pending.push(settlement);
    if (this.pending.length >= MAX_BATCH) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Sends what is pending now and waits for every call in flight (for shutdown). */
  async drain(): Promise<void> {
    this.flush();
    await Promise.all([...this.inFlight]);
  }

  private flush(): void {
    this.scheduled = false;
    const settlements = this.pending;
    if (settlements.length === 0) return;
    this.pending = [];
    const call = this.limiter.settle({ settlements }, { timeoutMs: 2_000 }).then(
      () => undefined,
      (err: unknown) => this.logger.warn('could not settle token reservations with the limiter', { count: settlements.length, error: err as Error }),
    );
    this.inFlight.add(call);
    void call.finally(() => this.inFlight.delete(call));
  }
}
