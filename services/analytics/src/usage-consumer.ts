import { fromBinary } from '@bufbuild/protobuf';
import { Subjects, type BusMessage, type Subscription } from '@keymesh/bus';
import { UsageEventSchema } from '@keymesh/proto/analytics/v1/analytics';
import { attr, extractTraceContext, type Logger, type Telemetry } from '@keymesh/telemetry';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
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

  private handle(message: BusMessage): void {
    const span = this.options.telemetry.tracer.startSpan(
      SPAN_NAME,
      { kind: SpanKind.CONSUMER, attributes: SPAN_ATTRIBUTES },
      extractTraceContext(message.headers),
    );
    try {
      const event = fromBinary(UsageEventSchema, message.data);
      span.setAttribute(attr.KEYMESH_REQUEST_ID, event.requestId);
      span.setAttribute(attr.KEYMESH_TENANT_ID, event.tenantId);
      this.options.usage.record(event);
    } catch (err) {
      // Log the size, not the bytes: whatever they are, they are not ours to print.
      this.options.logger.warn('usage event dropped: not a UsageEvent', { subject: message.subject, bytes: message.data.byteLength, error: err as Error });
      span.setStatus({ code: SpanStatusCode.ERROR, message: 'undecodable usage event' });
    } finally {
      span.end();
    }
  }
}
