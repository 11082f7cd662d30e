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
  /** What publishes may pile up while NATS is unreachable; DEFAULT_MAX_BUFFERED_BYTES when not given. */
  maxBufferedBytes?: number;
}

/**
 * The NATS client keeps what is published while it reconnects, without a
 * limit of its own: at a few thousand requests per second the usage events
 * alone are about half a megabyte a second. Past this much, publishes are
 * dropped (and counted) until NATS is back. Policies do not depend on it:
 * services also ask control for them (see followPolicy).
 */
export const DEFAULT_MAX_BUFFERED_BYTES = 32 * 1024 * 1024;

/**
 * The bus over NATS. The client reconnects forever and buffers publishes while
 * disconnected, up to maxBufferedBytes, so a NATS restart delays events
 * instead of failing requests, and a long outage costs events, not memory.
 */
export async function connectNatsBus(options: NatsBusOptions): Promise<Bus> {
  const logger = options.logger ?? createLogger(options.name);
  const maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  const nc: NatsConnection = await connect({
    servers: options.url,
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
  });
  let connected = true;
  let bufferedBytes = 0;
  let dropped = 0;
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type !== 'disconnect' && status.type !== 'reconnect') continue;
      logger.warn(`nats ${status.type}`, { server: String(status.data) });
      connected = status.type === 'reconnect';
      bufferedBytes = 0;
      if (connected && dropped > 0) logger.warn('bus messages dropped while NATS was unreachable', { dropped, maxBufferedBytes });
      if (connected) dropped = 0;
    }
  })();

  const bus: Bus = {
    publish(subject, data, extra = {}, ctx) {
      if (!connected) {
        if (bufferedBytes + data.byteLength > maxBufferedBytes) {
          if (dropped++ === 0) logger.warn('NATS unreachable and the publish buffer full: dropping bus messages until it is back', { subject, maxBufferedBytes });
          return;
        }
        bufferedBytes += data.byteLength;
      }
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
