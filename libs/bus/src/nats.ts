import { toBinary } from '@bufbuild/protobuf';
import { connect, headers as natsHeaders, type NatsConnection } from 'nats';
import { createLogger, injectTraceContext, type Logger } from '@keymesh/telemetry';
import type { Bus, SubscribeOptions, Subscription } from './bus';
import { EncodedBusMessage } from './message';
import { QueuedSubscription } from './queue';

export interface NatsBusOptions {
  url: string;
  /** Shown in the NATS server's connection list. */
  name: string;
  logger?: Logger;
}

/**
 * The bus over NATS. The client reconnects forever, so a NATS restart costs
 * events instead of failing requests: what is published while it is away is
 * dropped at its next reconnect attempt (nats.js resets its outbound buffer
 * on every dial), which also bounds what it holds. Policy does not depend on
 * the bus alone (see followPolicy's resync).
 */
export async function connectNatsBus(options: NatsBusOptions): Promise<Bus> {
  const logger = options.logger ?? createLogger(options.name);
  const nc: NatsConnection = await connect({
    servers: options.url,
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
  });
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect' || status.type === 'reconnect') logger.warn(`nats ${status.type}`, { server: String(status.data) });
    }
  })();

  const bus: Bus = {
    publish(subject, data, extra = {}, ctx) {
      const carried: Record<string, string> = { ...extra };
      injectTraceContext(carried, ctx);
      const h = natsHeaders();
      for (const [k, v] of Object.entries(carried)) h.set(k, v);
      try {
        nc.publish(subject, data, { headers: h });
      } catch (err) {
        // Closed connection: events are best-effort, requests must not fail for them.
        logger.warn('nats publish failed', { subject, error: err as Error });
      }
    },
    publishMessage(subject, schema, message, headers, ctx) {
      bus.publish(subject, toBinary(schema, message), headers, ctx);
    },
    subscribe(subject, subscribeOptions: SubscribeOptions = {}): Subscription {
      const sub = nc.subscribe(subject, subscribeOptions.queue ? { queue: subscribeOptions.queue } : {});
      const queued = new QueuedSubscription(subscribeOptions.maxPending ?? 65_536, () => sub.unsubscribe());
      void (async () => {
        for await (const msg of sub) {
          const headers: Record<string, string> = {};
          if (msg.headers) for (const [k, v] of msg.headers) headers[k] = v[0] ?? '';
          queued.push(new EncodedBusMessage(msg.subject, msg.data, headers));
        }
        queued.unsubscribe();
      })();
      return queued;
    },
    flush: () => nc.flush(),
    async close() {
      await nc.drain().catch(() => nc.close());
    },
  };
  return bus;
}
