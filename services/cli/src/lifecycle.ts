import { DEMO_CONFIG_YAML, loadConfigFile, parseConfig, type KeymeshConfig } from '@keymesh/config';
import { stringFlag, type ParsedArgs } from './args';

export async function configFrom(args: ParsedArgs): Promise<{ config: KeymeshConfig; path: string | undefined }> {
  const path = stringFlag(args, 'config');
  if (path) return { config: await loadConfigFile(path), path };
  return { config: parseConfig(DEMO_CONFIG_YAML, 'demo config'), path: undefined };
}

/** Resolves on the first SIGINT or SIGTERM. */
export function untilSignalled(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(signal);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

