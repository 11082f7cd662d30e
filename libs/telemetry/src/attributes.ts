// Span attribute names. Standard OpenTelemetry names where they exist
// (rpc.*, http.*, messaging.*); keymesh.* for what is ours.
export const SERVICE_NAME = 'service.name';
export const RPC_SYSTEM = 'rpc.system';
export const RPC_SERVICE = 'rpc.service';
export const RPC_METHOD = 'rpc.method';
export const RPC_GRPC_STATUS_CODE = 'rpc.grpc.status_code';
export const HTTP_REQUEST_METHOD = 'http.request.method';
export const HTTP_RESPONSE_STATUS_CODE = 'http.response.status_code';
export const HTTP_ROUTE = 'http.route';
export const URL_FULL = 'url.full';
export const SERVER_ADDRESS = 'server.address';
export const SERVER_PORT = 'server.port';
export const MESSAGING_SYSTEM = 'messaging.system';
export const MESSAGING_DESTINATION_NAME = 'messaging.destination.name';
export const MESSAGING_OPERATION_TYPE = 'messaging.operation.type';
export const GEN_AI_SYSTEM = 'gen_ai.system';
export const GEN_AI_REQUEST_MODEL = 'gen_ai.request.model';
export const GEN_AI_RESPONSE_MODEL = 'gen_ai.response.model';
export const GEN_AI_USAGE_INPUT_TOKENS = 'gen_ai.usage.input_tokens';
export const GEN_AI_USAGE_OUTPUT_TOKENS = 'gen_ai.usage.output_tokens';

/** Which part of keymesh made the span: edge, router, cache, limiter, keyvault, provider, analytics, control. */
export const KEYMESH_COMPONENT = 'keymesh.component';
export const KEYMESH_REQUEST_ID = 'keymesh.request_id';
export const KEYMESH_TENANT_ID = 'keymesh.tenant_id';
export const KEYMESH_ROUTE = 'keymesh.route';
export const KEYMESH_POOL_ID = 'keymesh.pool_id';
/** A key's id, never its secret. */
export const KEYMESH_KEY_ID = 'keymesh.key_id';
export const KEYMESH_PROVIDER_ID = 'keymesh.provider_id';
export const KEYMESH_ATTEMPT = 'keymesh.attempt';
export const KEYMESH_ATTEMPTS = 'keymesh.attempts';
export const KEYMESH_RETRY_REASON = 'keymesh.retry_reason';
export const KEYMESH_CACHE_HIT = 'keymesh.cache.hit';
export const KEYMESH_BATCH_SIZE = 'keymesh.batch.size';
export const KEYMESH_ERROR_REASON = 'keymesh.error.reason';
export const KEYMESH_POLICY_VERSION = 'keymesh.policy.version';
