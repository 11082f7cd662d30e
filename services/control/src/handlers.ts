import { ConfigError, parseConfig } from '@keymesh/config';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import type { ControlService } from '@keymesh/proto/control/v1/control';
import type { BearerToken, CallContext, ServiceImpl } from '@keymesh/rpc';
import type { PolicyStore, PolicyVersion } from './policy-store';

export interface ControlHandlerDeps {
  store: PolicyStore;
  publish: (version: PolicyVersion) => void;
  /**
   * Who may change the policy over gRPC. A policy names where each key's
   * secret is sent (base_url), so without this check anyone who reaches the
   * port could send every key to a host of their choosing. Undefined turns
   * ApplyConfig off; the watched file still applies.
   */
  operatorToken: BearerToken | undefined;
}

function requireOperator(ctx: CallContext, operatorToken: BearerToken | undefined): void {
  if (!operatorToken) {
    throw new KeymeshError({
      code: Code.FailedPrecondition,
      reason: Reason.PERMISSION_DENIED,
      message: 'ApplyConfig is off: start control with KEYMESH_OPERATOR_TOKEN set to allow it',
    });
  }
  if (!operatorToken.presentedBy(ctx)) {
    throw new KeymeshError({ code: Code.Unauthenticated, reason: Reason.UNAUTHENTICATED, message: 'ApplyConfig needs the operator token (KEYMESH_OPERATOR_TOKEN)' });
  }
}

export function controlHandlers(deps: ControlHandlerDeps): ServiceImpl<typeof ControlService> {
  return {
    async getPolicy() {
      const current = deps.store.get();
      if (!current) throw new KeymeshError({ code: Code.Unavailable, reason: Reason.UNAVAILABLE, message: 'no policy loaded yet' });
      return { version: current.version, policyJson: current.policyJson };
    },
    async applyConfig(request, ctx) {
      requireOperator(ctx, deps.operatorToken);
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
