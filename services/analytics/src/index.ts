export { startAnalytics } from './server';
export type { AnalyticsOptions, RunningAnalytics } from './server';
export { UsageAggregator, DEFAULT_REMEMBERED_REQUEST_IDS } from './usage/aggregator';
export type { UsageReport, UsageGroup, UsageAggregatorOptions } from './usage/aggregator';
export { UsageTotals } from './usage/totals';
export type { UsageRecord } from './usage/types';
