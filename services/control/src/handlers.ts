import { ConfigError, parseConfig } from '@keymesh/config';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { ControlService } from '@keymesh/proto/control/v1/control';
import type { ServiceImpl } from '@keymesh/rpc';
import type { PolicyStore, PolicyVersion } from './policy-store';

export interface ControlHandlerDeps {
  store: PolicyStore;
  publish: (version: PolicyVersion) => void;
}

export function controlHandlers(deps: ControlHandlerDeps): ServiceImpl<typeof ControlService> {
  return {
    async getPolicy() {
      const current = deps.store.get();
      if (!current) throw new KeymeshError({ code: Code.Unavailable, reason: Reason.UNAVAILABLE, message: 'no policy loaded yet' });
      return { version: current.version, policyJson: current.policyJson };
    },
    async applyConfig(request) {
      let config;
      try {
        config = parseConfig(request.configYaml, request.sourceName || 'config');
      } catch (err) {
        if (err instanceof ConfigError) {
          throw new KeymeshError({ code: Code.InvalidArgument, reason: Reason.INVALID_CONFIG, message: err.message, metadata: { problems: String(err.problems.length) } });
        }
        throw err;
      }
      const applied = deps.store.apply(config);
      if (!applied) return { version: deps.store.get()?.version ?? 0n, changed: false };
      deps.publish(applied);
      return { version: applied.version, changed: true };
    },
  };
}
