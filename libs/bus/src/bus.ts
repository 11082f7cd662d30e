import type { DescMessage, MessageShape } from '@bufbuild/protobuf';
import type { Context } from '@opentelemetry/api';

/** NATS subjects keymesh publishes on: keymesh.<area>.<event>. */
export const Subjects = {
  policyUpdated: 'keymesh.policy.updated',
  keysChanged: 'keymesh.keys.changed',
  usageRecorded: 'keymesh.usage.recorded',
  /** A provider rejected a key (401/403) and the limiter parked it (limiter.v1.KeyParkedEvent). */
  keyParked: 'keymesh.keys.parked',
} as const;

export interface BusMessage {
  readonly subject: string;
  /** The payload's bytes; a message published in-process is encoded on first read. */
  readonly data: Uint8Array;
  /** Message headers; W3C traceparent/tracestate of the publisher's span among them. */
  readonly headers: Readonly<Record<string, string>>;
  /**
   * The payload as a `schema` message; throws when it is not one. In-process
   * this is the published object itself, shared by every subscriber: treat it
   * as read-only.
   */
  decode<Desc extends DescMessage>(schema: Desc): MessageShape<Desc>;
}

/**
 * Messages as an async iterator: `for await (const msg of sub)`; leaving the
 * loop (break, return, throw) unsubscribes.
 */
export interface Subscription extends AsyncIterable<BusMessage> {
  unsubscribe(): void;
}

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group. */
  queue?: string;
  /** Messages held for a slow consumer before the oldest are dropped (and counted). */
  maxPending?: number;
}

/**
 * Publish/subscribe with fire-and-forget delivery. Two implementations with the
 * same semantics: NATS (across processes) and in-process (the embedded mode).
 */
export interface Bus {
  /** Buffers the message; publishing never blocks the hot path. `ctx` (else the active context) travels in the headers as W3C traceparent. */
  publish(subject: string, data: Uint8Array, headers?: Record<string, string>, ctx?: Context): void;
  /**
   * Publishes a protobuf message. Over NATS it is encoded here; in-process it
   * is handed over as is, so the embedded mode pays no codec per event (the
   * usage events of every request go this way). The publisher must not change
   * it afterwards.
   */
  publishMessage<Desc extends DescMessage>(subject: string, schema: Desc, message: MessageShape<Desc>, headers?: Record<string, string>, ctx?: Context): void;
  subscribe(subject: string, options?: SubscribeOptions): Subscription;
  /** Resolves when everything published so far has left this process. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** NATS subject matching: `*` is one token, a trailing `>` is one or more. */
export function subjectMatches(pattern: string, subject: string): boolean {
  if (pattern === subject) return true;
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}
