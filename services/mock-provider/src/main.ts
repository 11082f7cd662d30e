import { readFile } from 'node:fs/promises';
import { startMockProvider } from './server';
import type { MockProviderOptions } from './types';

const USAGE =
  'usage: node services/mock-provider/dist/main.js [--port N] [--host H] ' +
  "[--options-json '<MockProviderOptions as JSON>' | --options-file FILE]";

interface CliArgs {
  port?: number;
  host?: string;
  optionsJson?: string;
  optionsFile?: string;
}

function parseArgs(argv: readonly string[]): CliArgs {
  const args: CliArgs = {};
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === '--help' || flag === '-h') throw new UsageError('');
    const value = argv[i + 1];
    if (value === undefined) throw new UsageError(`${flag}: missing value`);
    i += 1;
    switch (flag) {
      case '--port':
        if (!/^\d+$/.test(value)) throw new UsageError('--port: expected an integer');
        args.port = Number(value);
        break;
      case '--host':
        args.host = value;
        break;
      case '--options-json':
        args.optionsJson = value;
        break;
      case '--options-file':
        args.optionsFile = value;
        break;
      default:
        throw new UsageError(`unknown flag ${flag}`);
    }
  }
  if (args.optionsJson !== undefined && args.optionsFile !== undefined) {
    throw new UsageError('give --options-json or --options-file, not both');
  }
  return args;
}

class UsageError extends Error {}

async function loadOptions(args: CliArgs): Promise<MockProviderOptions> {
  let text = args.optionsJson;
  let source = '--options-json';
  if (args.optionsFile !== undefined) {
    text = await readFile(args.optionsFile, 'utf8');
    source = args.optionsFile;
  }
  let options: MockProviderOptions = { keys: [] };
  if (text !== undefined) {
    try {
      options = JSON.parse(text) as MockProviderOptions;
    } catch {
      // The JSON may hold secrets, so the parser's message (which quotes it) is not repeated.
      throw new Error(`${source}: not valid JSON`);
    }
  }
  return {
    ...options,
    ...(args.port === undefined ? {} : { port: args.port }),
    ...(args.host === undefined ? {} : { host: args.host }),
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const provider = await startMockProvider(await loadOptions(args));
  process.stdout.write(`mock provider listening on ${provider.url}\n`);

  const stop = (): void => {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    provider.close().then(
      () => undefined,
      (error: unknown) => {
        process.stderr.write(`mock provider: close failed: ${error instanceof Error ? error.message : String(error)}\n`);
        process.exitCode = 1;
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  if (error instanceof UsageError) {
    process.stderr.write(error.message === '' ? `${USAGE}\n` : `mock provider: ${error.message}\n${USAGE}\n`);
    process.exitCode = error.message === '' ? 0 : 2;
    return;
  }
  process.stderr.write(`mock provider: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
