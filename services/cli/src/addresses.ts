/** Default gRPC ports of `keymesh serve`, overridable per service by env. */
export const SERVICE_PORTS = {
  router: 50051,
  limiter: 50052,
  keyvault: 50053,
  cache: 50054,
  analytics: 50055,
  control: 50056,
} as const;

export type ServiceName = keyof typeof SERVICE_PORTS;
export const SERVICE_NAMES = Object.keys(SERVICE_PORTS) as ServiceName[];

/** Where a peer listens: KEYMESH_<NAME>_ADDR, else loopback on its default port. */
export function peerAddress(name: ServiceName, env: NodeJS.ProcessEnv = process.env): string {
  return env[`KEYMESH_${name.toUpperCase()}_ADDR`] || `127.0.0.1:${SERVICE_PORTS[name]}`;
}

export function peersFromEnv(env: NodeJS.ProcessEnv = process.env): Record<Exclude<ServiceName, 'router'>, string> {
  return {
    limiter: peerAddress('limiter', env),
    keyvault: peerAddress('keyvault', env),
    cache: peerAddress('cache', env),
    analytics: peerAddress('analytics', env),
    control: peerAddress('control', env),
  };
}
