import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { Subjects, type Bus } from '@keymesh/bus';
import { ConfigError, parseConfig, type KeymeshConfig } from '@keymesh/config';
import { ControlService, PolicyUpdatedEventSchema } from '@keymesh/proto/control/v1/control';
import { BearerToken, createRpcServer } from '@keymesh/rpc';
import { createLogger, type Telemetry } from '@keymesh/telemetry';
import { controlHandlers } from './handlers';
import { PolicyStore, type PolicyVersion } from './policy-store';

export interface ControlOptions {
  telemetry: Telemetry;
  bus: Bus;
  sealSecret: (plaintext: string) => string;
  /** The validated config to start with. */
  config: KeymeshConfig;
  /** When set, edits to this file are applied as they are saved. */
  watchPath?: string;
  /** KEYMESH_OPERATOR_TOKEN: what `keymesh apply` must present. Without it ApplyConfig is refused. */
  operatorToken?: string;
  host: string;
  port: number;
}

export interface RunningControl {
  readonly port: number;
  /** Re-reads the watched file; resolves to the new version, or undefined when unchanged. */
  reload(): Promise<bigint | undefined>;
  stop(): Promise<void>;
}

/** The control plane: owns the policy and announces every new version on keymesh.policy.updated. */
export async function startControl(options: ControlOptions): Promise<RunningControl> {
  const logger = createLogger('control');
  const store = new PolicyStore(options.sealSecret);
  const publish = (v: PolicyVersion): void => {
    options.bus.publishMessage(Subjects.policyUpdated, PolicyUpdatedEventSchema, create(PolicyUpdatedEventSchema, { version: v.version }));
    logger.info('policy published', { version: String(v.version) });
  };
  const first = store.apply(options.config);
  const server = createRpcServer({ telemetry: options.telemetry, logger });
  server.add(ControlService, controlHandlers({ store, publish, operatorToken: options.operatorToken ? new BearerToken(options.operatorToken) : undefined }));
  const port = await server.listen(options.host, options.port);
  // Announced once GetPolicy can answer: services fetch what is announced.
  if (first) publish(first);

  const reload = async (): Promise<bigint | undefined> => {
    if (!options.watchPath) return undefined;
    const text = await readFile(options.watchPath, 'utf8');
    const applied = store.apply(parseConfig(text, basename(options.watchPath)));
    if (applied) publish(applied);
    return applied?.version;
  };

  let watcher: FSWatcher | undefined;
  let debounce: NodeJS.Timeout | undefined;
  if (options.watchPath) {
    // Editors save in several writes; apply once the file has settled.
    watcher = watch(options.watchPath, () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        reload().catch((err: unknown) => {
          // A half-edited or invalid file leaves the running policy in place.
          if (err instanceof ConfigError) logger.warn('config not applied', { problems: err.problems });
          else logger.warn('config not applied', { error: err as Error });
        });
      }, 150);
    });
  }

  return {
    port,
    reload,
    async stop() {
      watcher?.close();
      clearTimeout(debounce);
      await server.shutdown();
    },
  };
}
