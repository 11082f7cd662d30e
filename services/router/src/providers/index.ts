import type { ProviderAdapter, ProviderKind } from './adapter';
import { openAiAdapter } from './openai';

export type { ProviderAdapter, ProviderKind, ProviderFailure, FailureKind, LimitSnapshot, ProviderHttpRequest } from './adapter';

const ADAPTERS: Record<ProviderKind, ProviderAdapter> = { openai: openAiAdapter };

export function adapterFor(kind: ProviderKind): ProviderAdapter {
  return ADAPTERS[kind];
}
