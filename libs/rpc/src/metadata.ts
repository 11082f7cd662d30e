import type { Metadata } from '@grpc/grpc-js';
import { propagation, type Context } from '@opentelemetry/api';
import { baseContext } from '@keymesh/telemetry';

export function injectIntoMetadata(metadata: Metadata, ctx: Context): void {
  propagation.inject(ctx, metadata, { set: (m, key, value) => m.set(key, value) });
}

export function extractFromMetadata(metadata: Metadata): Context {
  return propagation.extract(baseContext(), metadata, {
    get: (m, key) => {
      const values = m.get(key);
      return values.length === 0 ? undefined : values.map(String);
    },
    keys: (m) => Object.keys(m.getMap()),
  });
}

export function firstMetadataValue(metadata: Metadata, key: string): string | undefined {
  const values = metadata.get(key);
  if (values.length === 0) return undefined;
  const value = values[0];
  return typeof value === 'string' ? value : value.toString('utf8');
}
