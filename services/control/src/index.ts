export { startControl } from './server';
export type { ControlOptions, RunningControl } from './server';
export { PolicyStore } from './policy-store';
