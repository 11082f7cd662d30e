import { Subjects, type Bus } from '@keymesh/bus';
import { AnalyticsService } from '@keymesh/proto/analytics/v1/analytics';
import { createRpcServer } from '@keymesh/rpc';
import { createLogger, type Logger, type Telemetry } from '@keymesh/telemetry';
import { analyticsHandlers } from './handlers';
import { UsageAggregator } from './usage/aggregator';
import { UsageConsumer } from './usage-consumer';

export interface AnalyticsOptions {
  telemetry: Telemetry;
  bus: Bus;
  host: string;
  port: number;
  logger?: Logger;
}

export interface RunningAnalytics {
  readonly port: number;
  /** Events ingested so far (duplicates and undecodable ones included): what a test waits on. */
  ingested(): number;
  stop(): Promise<void>;
}

/** Analytics: sums the usage events routers publish, answers AnalyticsService. */
export async function startAnalytics(options: AnalyticsOptions): Promise<RunningAnalytics> {
  const logger = options.logger ?? createLogger('analytics');
  const usage = new UsageAggregator();
  // No queue group: every replica sums every event, so any replica answers for all.
  const subscription = options.bus.subscribe(Subjects.usageRecorded);
  const consumer = new UsageConsumer({ subscription, usage, telemetry: options.telemetry, logger });
  const server = createRpcServer({ telemetry: options.telemetry, logger });
  server.add(AnalyticsService, analyticsHandlers(usage));
  let port: number;
  try {
    port = await server.listen(options.host, options.port);
  } catch (err) {
    subscription.unsubscribe();
    throw err;
  }
  return {
    port,
    ingested: () => consumer.ingested,
    async stop() {
      subscription.unsubscribe();
      await Promise.all([consumer.done, server.shutdown()]);
    },
  };
}
