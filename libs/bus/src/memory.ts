import { injectTraceContext } from '@keymesh/telemetry';
import type { Context } from '@opentelemetry/api';
import { subjectMatches, type Bus, type BusMessage, type SubscribeOptions, type Subscription } from './bus';
import { EncodedBusMessage, InProcessBusMessage } from './message';
import { QueuedSubscription } from './queue';

interface Member {
  pattern: string;
  queue: string | undefined;
  subscription: QueuedSubscription;
}

/**
 * The in-process bus of the embedded mode. Delivery is deferred to a later
 * tick, as on NATS, so a publisher never runs subscriber code inline.
 */
export function createMemoryBus(): Bus {
  const members = new Set<Member>();
  const queueCursor = new Map<string, number>();
  let inFlight: BusMessage[] = [];
  let scheduled = false;
  let closed = false;

  const deliver = (): void => {
    scheduled = false;
    const batch = inFlight;
    inFlight = [];
    for (const message of batch) {
      const groups = new Map<string, Member[]>();
      for (const member of members) {
        if (!subjectMatches(member.pattern, message.subject)) continue;
        if (member.queue === undefined) {
          member.subscription.push(message);
        } else {
          const key = `${member.pattern}\u0000${member.queue}`;
          const group = groups.get(key) ?? [];
          group.push(member);
          groups.set(key, group);
        }
      }
      for (const [key, group] of groups) {
        const cursor = (queueCursor.get(key) ?? 0) % group.length;
        queueCursor.set(key, cursor + 1);
        group[cursor].subscription.push(message);
      }
    }
  };

  const enqueue = (message: BusMessage): void => {
    inFlight.push(message);
    if (!scheduled) {
      scheduled = true;
      setImmediate(deliver);
    }
  };

  const carry = (headers: Record<string, string>, ctx: Context | undefined): Record<string, string> => {
    const carried = { ...headers };
    injectTraceContext(carried, ctx);
    return carried;
  };

  return {
    publish(subject, data, headers = {}, ctx) {
      if (closed) return;
      enqueue(new EncodedBusMessage(subject, data, carry(headers, ctx)));
    },
    publishMessage(subject, schema, message, headers = {}, ctx) {
      if (closed) return;
      enqueue(new InProcessBusMessage(subject, schema, message, carry(headers, ctx)));
    },
    subscribe(pattern, options: SubscribeOptions = {}): Subscription {
      const member: Member = {
        pattern,
        queue: options.queue,
        subscription: new QueuedSubscription(options.maxPending ?? 65_536, () => members.delete(member)),
      };
      members.add(member);
      return member.subscription;
    },
    async flush() {
      if (scheduled) await new Promise<void>((resolve) => setImmediate(resolve));
    },
    async close() {
      closed = true;
      for (const member of [...members]) member.subscription.unsubscribe();
    },
  };
}
