import { Subjects, type BusMessage, type Subscription } from '@keymesh/bus';
import { UsageEventBatchSchema } from '@keymesh/proto/analytics/v1/analytics';
import { attr, extractTraceContext, type Logger, type Telemetry } from '@keymesh/telemetry';
import { SpanKind, SpanStatusCode, type Link } from '@opentelemetry/api';
import type { UsageAggregator } from './usage/aggregator';

const SPAN_NAME = `${Subjects.usageRecorded} process`;
// Shared by every span: startSpan copies attributes, so none is built per message.
const SPAN_ATTRIBUTES = {
  [attr.KEYMESH_COMPONENT]: 'analytics',
  // Both bus implementations have NATS semantics (subjects, headers, at-most-once).
  [attr.MESSAGING_SYSTEM]: 'nats',
  [attr.MESSAGING_DESTINATION_NAME]: Subjects.usageRecorded,
  [attr.MESSAGING_OPERATION_TYPE]: 'process',
} as const;

export interface UsageConsumerOptions {
  /** A subscription to Subjects.usageRecorded. */
  subscription: Subscription;
  usage: UsageAggregator;
  telemetry: Telemetry;
  logger: Logger;
}

/**
 * The bus side of the service, as handlers.ts is the gRPC side: each usage
 * message is decoded and handed to the aggregator inside a CONSUMER span whose
 * parent is the publisher's span (from the message headers), so a request's
 * trace reaches analytics.
 */
export class UsageConsumer {
  /** Resolves when the subscription ends (unsubscribe, bus closed). */
  readonly done: Promise<void>;
  private handled = 0;

  constructor(private readonly options: UsageConsumerOptions) {
    this.done = this.run();
  }

  /** Messages handled so far: recorded, duplicate or undecodable. */
  get ingested(): number {
    return this.handled;
  }

  private async run(): Promise<void> {
    for await (const message of this.options.subscription) {
      this.handle(message);
      this.handled++;
    }
  }

  /**
   * One CONSUMER span per batch: its parent is the publisher's context from
   * the headers (the batch's first request), and it links every other
   * request's trace through the events' trace_parent.
   */
  private handle(message: BusMessage): void {
    const span = this.options.telemetry.tracer.startSpan(
      SPAN_NAME,
      { kind: SpanKind.CONSUMER, attributes: SPAN_ATTRIBUTES },
      extractTraceContext(message.headers),
    );
    try {
      const { events } = message.decode(UsageEventBatchSchema);
      span.setAttribute(attr.KEYMESH_BATCH_SIZE, events.length);
      if (events.length === 1) {
        span.setAttribute(attr.KEYMESH_REQUEST_ID, events[0].requestId);
        span.setAttribute(attr.KEYMESH_TENANT_ID, events[0].tenantId);
      }
      const links: Link[] = [];
      for (let i = 0; i < events.length; i++) {
        this.options.usage.record(events[i]);
        if (i > 0) {
          const link = linkOf(events[i].traceParent);
          if (link) links.push(link);
        }
      }
      if (links.length > 0) span.addLinks(links);
    } catch (err) {
      // Log the size, not the bytes: whatever they are, they are not ours to print.
      this.options.logger.warn('usage event dropped: not a UsageEvent', { subject: message.subject, bytes: message.data.byteLength, error: err as Error });
      span.setStatus({ code: SpanStatusCode.ERROR, message: 'undecodable usage event' });
    } finally {
      span.end();
    }
  }
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

function linkOf(traceParent: string): Link | undefined {
  const match = TRACEPARENT.exec(traceParent);
  if (!match) return undefined;
  return { context: { traceId: match[1], spanId: match[2], traceFlags: parseInt(match[3], 16), isRemote: true } };
}
