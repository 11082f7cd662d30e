import type { MessageInitShape } from '@bufbuild/protobuf';
import type { AnalyticsService, UsageGroupSchema, UsageTotalsSchema } from '@keymesh/proto/analytics/v1/analytics';
import type { ServiceImpl } from '@keymesh/rpc';
import type { UsageAggregator, UsageGroup } from './usage/aggregator';
import type { UsageTotals } from './usage/totals';

function totalsOf(totals: UsageTotals): MessageInitShape<typeof UsageTotalsSchema> {
  return {
    requests: BigInt(totals.requests),
    errors: BigInt(totals.errors),
    cached: BigInt(totals.cached),
    promptTokens: BigInt(totals.promptTokens),
    completionTokens: BigInt(totals.completionTokens),
    attempts: BigInt(totals.attempts),
    costMicroUsd: BigInt(totals.costMicroUsd),
    totalLatency: { seconds: BigInt(totals.latencySeconds), nanos: totals.latencyNanos },
  };
}

function groupOf(group: UsageGroup): MessageInitShape<typeof UsageGroupSchema> {
  return { name: group.name, totals: totalsOf(group.totals) };
}

export function analyticsHandlers(usage: UsageAggregator): ServiceImpl<typeof AnalyticsService> {
  return {
    async getUsage(request) {
      const report = usage.report(request.tenantId === '' ? undefined : request.tenantId);
      return {
        totals: totalsOf(report.totals),
        tenants: report.tenants.map(groupOf),
        models: report.models.map(groupOf),
        keys: report.keys.map(groupOf),
        routes: report.routes.map(groupOf),
      };
    },
  };
}
