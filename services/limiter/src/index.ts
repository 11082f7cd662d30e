export { KeyPoolLimiter, DEFAULT_COOLING_MS } from './domain/key-pool-limiter';
export { LimiterError, UnknownPoolError, UnknownKeyError, InvalidPoolSpecError } from './domain/errors';
export { MAX_WINDOW_REQUESTS, findPoolSpecProblems } from './domain/pool-spec';
export type {
  WindowLimit,
  KeySpec,
  PoolSpec,
  KeyCondition,
  KeyConditionState,
  WindowState,
  KeyState,
  AcquireRequest,
  AcquireResult,
  DenialReason,
  KeyOutcome,
  LeaseRequest,
  LeaseResult,
} from './domain/types';
export type { LimiterStore, KeyRef, KeyCandidates, AcquireDecision } from './store/store';
export { MemoryLimiterStore } from './store/memory';
export { FailoverLimiterStore } from './store/failover';
export type { FailureMode } from './store/failover';
export { RedisLimiterStore, type RedisLimiterStoreOptions } from './store/redis';
export { type Clock, systemClock, FakeClock } from '@keymesh/clock';
export { startLimiter, poolSpecsOf } from './server';
export type { LimiterOptions, RunningLimiter } from './server';
