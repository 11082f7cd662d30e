export type {
  MockFailures,
  MockKeyOptions,
  MockKeyStats,
  MockProvider,
  MockProviderOptions,
  WindowLimit,
} from './types';
export { startMockProvider } from './server';
