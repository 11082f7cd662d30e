export { createRpcServer } from './server';
export type { RpcServer, RpcServerOptions, CallContext, ServiceImpl } from './server';
export { createRpcClient, closeRpcClient } from './client';
export type { RpcClient, RpcClientOptions, CallOptions } from './client';
export { definitionOf } from './definition';
export { durationOfMs, msOfDuration } from './duration';
export { toUint32, UINT32_MAX } from './uint32';
export { BearerToken, bearerMetadata } from './bearer';
