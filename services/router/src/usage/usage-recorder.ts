import { create } from '@bufbuild/protobuf';
import { Subjects, type Bus } from '@keymesh/bus';
import { UsageEventBatchSchema, type UsageEvent } from '@keymesh/proto/analytics/v1/analytics';
import { ROOT_CONTEXT, trace, type Context } from '@opentelemetry/api';

const MAX_BATCH = 512;

/**
 * How long an event waits for others to share its message. Per event-loop
 * turn, a lightly loaded router sent one message per request, and each cost
 * a publish and, in analytics, a decode and a span of its own; usage is read
 * in totals, where 50 ms does not show.
 */
export const USAGE_FLUSH_MS = 50;

/**
 * Publishes usage events in batches: every `flushMs`, or at once when a batch
 * is full. The batch message carries the first request's trace context in its
 * headers (so analytics' span joins that trace) and each event its own
 * traceparent (so analytics links the others); events never carry a secret.
 */
export class UsageRecorder {
  private pending: UsageEvent[] = [];
  private firstContext: Context = ROOT_CONTEXT;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly bus: Bus,
    private readonly flushMs = USAGE_FLUSH_MS,
  ) {}

  record(event: UsageEvent, ctx: Context): void {
    const span = trace.getSpan(ctx)?.spanContext();
    if (span) event.traceParent = `00-${span.traceId}-${span.spanId}-0${span.traceFlags & 1}`;
    if (this.pending.length === 0) this.firstContext = ctx;
    this.pending.push(event);
    if (this.pending.length >= MAX_BATCH) this.flush();
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => this.flush(), this.flushMs);
      // Stopping flushes what is pending; a timer alone must not keep the process up.
      this.timer.unref();
    }
  }

  /** Publishes what is pending now (a full batch, the timer, and the router's stop). */
  flush(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.pending.length === 0) return;
    const events = this.pending;
    this.pending = [];
    this.bus.publishMessage(Subjects.usageRecorded, UsageEventBatchSchema, create(UsageEventBatchSchema, { events }), undefined, this.firstContext);
    this.firstContext = ROOT_CONTEXT;
  }
}
