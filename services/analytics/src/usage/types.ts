/**
 * One finished request, as the usage aggregator needs it. The fields are named
 * and typed as on the wire's UsageEvent, so a decoded event is passed as is
 * (no per-event copy) without this folder importing the wire types. It holds
 * ids only: keys by id, tenants by id, never a secret.
 */
export interface UsageRecord {
  readonly requestId: string;
  readonly tenantId: string;
  /** The route (model alias) the caller asked for. */
  readonly route: string;
  readonly model: string;
  readonly keyId: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Whole micro-USD (1e-6 USD); 0 when nothing priced answered. */
  readonly costMicroUsd: bigint;
  /** As google.protobuf.Duration carries it; undefined when not reported. */
  readonly latency?: { readonly seconds: bigint; readonly nanos: number } | undefined;
  /** The HTTP status the caller saw. */
  readonly status: number;
  readonly attempts: number;
  readonly cached: boolean;
  /** keymesh's error reason when the request failed; '' when it did not. */
  readonly errorReason: string;
}
