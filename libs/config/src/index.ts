export { ConfigError } from './config-error';
export { DEMO_CONFIG_YAML } from './demo';
export { formatDuration, parseDuration } from './duration';
export { sha256Hex } from './hash';
export { loadConfigFile, parseConfig } from './load';
export {
  compilePolicy,
  parsePolicy,
  type Policy,
  type PolicyDegraded,
  type PolicyKey,
  type PolicyPool,
  type PolicyProvider,
  type PolicyRoute,
  type PolicyTarget,
  type PolicyTenant,
  type KeySelection,
  type RouteStrategy,
  type SecretSource,
} from './policy';
export {
  KEY_SELECTIONS,
  isKeymeshVariable,
  KeymeshConfigSchema,
  MAX_KEY_CONCURRENCY,
  MAX_REQUESTS_PER_WINDOW,
  ROUTE_STRATEGIES,
  type ConfigKey,
  type ConfigPool,
  type ConfigProvider,
  type ConfigRoute,
  type ConfigTenant,
  type KeymeshConfig,
  type MockProviderConfig,
} from './schema';
export { costScopePoolId, isCostScopePoolId, describeLimitSet, limitedScopesOf, SCOPE_KEY_ID, scopePoolId, SCOPE_KINDS, type LimitedScope, type ScopeKind, type ScopeMeasure } from './scopes';
export { costMicroUsd, formatUsd, type TokenPrice } from './price';
export type { CalendarQuota, ConfigSecret, DeepReadonly, LimitSet, TokenWindowLimit, WindowLimit } from './types';
