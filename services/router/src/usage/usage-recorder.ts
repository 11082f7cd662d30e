import { create } from '@bufbuild/protobuf';
import { Subjects, type Bus } from '@keymesh/bus';
import { UsageEventBatchSchema, type UsageEvent } from '@keymesh/proto/analytics/v1/analytics';
import { ROOT_CONTEXT, trace, type Context } from '@opentelemetry/api';

const MAX_BATCH = 512;

/**
 * Publishes usage events one batch per event-loop turn. The batch message
 * carries the first request's trace context in its headers (so analytics'
 * span joins that trace) and each event its own traceparent (so analytics
 * links the others); events never carry a secret.
 */
export class UsageRecorder {
  private pending: UsageEvent[] = [];
  private firstContext: Context = ROOT_CONTEXT;
  private scheduled = false;

  constructor(private readonly bus: Bus) {}

  record(event: UsageEvent, ctx: Context): void {
    const span = trace.getSpan(ctx)?.spanContext();
    if (span) event.traceParent = `00-${span.traceId}-${span.spanId}-0${span.traceFlags & 1}`;
    if (this.pending.length === 0) this.firstContext = ctx;
    this.pending.push(event);
    if (this.pending.length >= MAX_BATCH) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const events = this.pending;
    this.pending = [];
    this.bus.publishMessage(Subjects.usageRecorded, UsageEventBatchSchema, create(UsageEventBatchSchema, { events }), undefined, this.firstContext);
    this.firstContext = ROOT_CONTEXT;
  }
}
