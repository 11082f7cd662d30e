import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { anyPack, anyUnpack, DurationSchema } from '@bufbuild/protobuf/wkt';
import { ErrorInfoSchema, RetryInfoSchema } from '@keymesh/proto/google/rpc/error_details';
import { StatusSchema } from '@keymesh/proto/google/rpc/status';
import { Code, KeymeshError } from './keymesh-error';

const DOMAIN = 'keymesh';

/** google.rpc.Status bytes for the `grpc-status-details-bin` trailer. */
export function toStatusDetails(err: KeymeshError): Uint8Array {
  const details = [
    anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: err.reason, domain: DOMAIN, metadata: { ...err.metadata } })),
  ];
  if (err.retryAfterMs !== undefined) {
    const seconds = Math.floor(err.retryAfterMs / 1000);
    const retryDelay = create(DurationSchema, {
      seconds: BigInt(seconds),
      nanos: Math.round((err.retryAfterMs - seconds * 1000) * 1e6),
    });
    details.push(anyPack(RetryInfoSchema, create(RetryInfoSchema, { retryDelay })));
  }
  return toBinary(StatusSchema, create(StatusSchema, { code: err.code, message: err.message, details }));
}

/** Rebuilds the KeymeshError a peer sent; tolerates peers that sent no details. */
export function fromStatusDetails(code: Code, message: string, detailsBin: Uint8Array | undefined): KeymeshError {
  // Same spelling as the Reason constants (DEADLINE_EXCEEDED, UNAVAILABLE), so
  // callers branch on one vocabulary whether or not the peer sent ErrorInfo.
  let reason = reasonOfCode(code);
  let metadata: Record<string, string> = {};
  let retryAfterMs: number | undefined;
  if (detailsBin !== undefined && detailsBin.byteLength > 0) {
    try {
      const status = fromBinary(StatusSchema, detailsBin);
      for (const detail of status.details) {
        const info = anyUnpack(detail, ErrorInfoSchema);
        if (info) {
          reason = info.reason;
          metadata = { ...info.metadata };
          continue;
        }
        const retry = anyUnpack(detail, RetryInfoSchema);
        if (retry?.retryDelay) {
          retryAfterMs = Number(retry.retryDelay.seconds) * 1000 + retry.retryDelay.nanos / 1e6;
        }
      }
    } catch {
      // A malformed trailer from a peer: keep the code and message we have.
    }
  }
  return new KeymeshError({ code, reason, message, metadata, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) });
}

function reasonOfCode(code: Code): string {
  const name: string | undefined = Code[code];
  return name === undefined ? 'UNKNOWN' : name.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
}
