import { create } from '@bufbuild/protobuf';
import { Subjects, type Bus } from '@keymesh/bus';
import { followPolicy } from '@keymesh/policy';
import { ControlService } from '@keymesh/proto/control/v1/control';
import { KeysChangedEventSchema, KeyVaultService } from '@keymesh/proto/keyvault/v1/keyvault';
import { BearerToken, closeRpcClient, createRpcClient, createRpcServer } from '@keymesh/rpc';
import { createLogger, type Telemetry } from '@keymesh/telemetry';
import type { Sealer } from './crypto/sealing';
import { keyVaultHandlers } from './handlers';
import { KeyVault } from './vault/key-vault';

export interface KeyVaultOptions {
  telemetry: Telemetry;
  bus: Bus;
  sealer: Sealer;
  /** The token the router presents (KEYMESH_ROUTER_TOKEN). */
  routerToken: string;
  controlAddress: string;
  host: string;
  port: number;
  env?: NodeJS.ProcessEnv;
}

export interface RunningKeyVault {
  readonly port: number;
  readonly ready: Promise<void>;
  stop(): Promise<void>;
}

export async function startKeyVault(options: KeyVaultOptions): Promise<RunningKeyVault> {
  const logger = createLogger('keyvault');
  const vault = new KeyVault(options.sealer, options.env);
  const control = createRpcClient(ControlService, options.controlAddress, { telemetry: options.telemetry });
  const follower = followPolicy({
    control,
    bus: options.bus,
    logger,
    onPolicy: (policy, version) => {
      const { changedKeyIds, problems } = vault.apply(policy);
      for (const problem of problems) logger.warn(problem);
      if (changedKeyIds.length > 0) {
        options.bus.publishMessage(Subjects.keysChanged, KeysChangedEventSchema, create(KeysChangedEventSchema, { configVersion: version, keyIds: changedKeyIds }));
      }
    },
  });
  const server = createRpcServer({ telemetry: options.telemetry, logger });
  server.add(
    KeyVaultService,
    keyVaultHandlers({ vault, routerToken: new BearerToken(options.routerToken), audit: createLogger('keyvault.audit') }),
  );
  const port = await server.listen(options.host, options.port);
  return {
    port,
    ready: follower.ready,
    async stop() {
      follower.close();
      await server.shutdown();
      closeRpcClient(control);
    },
  };
}
