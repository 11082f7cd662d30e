export { CircuitBreaker, DEFAULT_BREAKER_OPTIONS, Permit, type BreakerOptions, type BreakerReason, type BreakerState } from './circuit-breaker';
export { BreakerBoard, type BreakerSnapshot } from './breaker-board';
