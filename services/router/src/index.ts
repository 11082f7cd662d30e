export { startRouter } from './server';
export type { RouterOptions, RunningRouter } from './server';
