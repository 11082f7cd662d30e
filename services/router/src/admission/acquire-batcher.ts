import { msOfDuration, type RpcClient } from '@keymesh/rpc';
import { KeymeshError, Code, Reason } from '@keymesh/errors';
import { AcquireOutcome, Priority, type AcquireResponse, type LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import { attr, spanLinkOf, type Telemetry } from '@keymesh/telemetry';
import { SpanKind, trace, type Context, type Link, type SpanContext } from '@opentelemetry/api';

export type Admission = (
  | {
      granted: true;
      keyId: string;
      /** Set when the grant reserved tokens on the key: names the reservation to settle. */
      admissionId?: string;
      /** Set on a key with a concurrency limit: the hold to release when the request ends (see HoldKeeper). */
      hold?: { readonly holdId: string; readonly ttlMs: number };
    }
  | { granted: false; retryAfterMs: number | undefined; reason: string }
) & {
  /** The batch call that decided it, for the request's span to link to. */
  decidedBy: SpanContext;
};

interface Pending {
  poolId: string;
  excludedKeyIds: string[];
  requestId: string;
  estimatedTokens: number;
  high: boolean;
  deadlineMs: number;
  ctx: Context;
  link: Link | undefined;
  resolve: (admission: Admission) => void;
  reject: (err: unknown) => void;
}

const MAX_BATCH = 512;

/**
 * Combines the admissions of one event-loop turn into one AcquireBatch call.
 * A unary grpc-js call costs about as much CPU as the whole proxy path, so
 * paying one per request would cap the gateway far below the provider; one
 * per turn costs the same and serves every request that arrived in it.
 *
 * Tracing: the batch call runs in the context of its first request and links
 * to every other request's span, so each trace shows the real call that
 * admitted it rather than a made-up one.
 */
export class AcquireBatcher {
  private pending: Pending[] = [];
  private scheduled = false;

  constructor(
    private readonly limiter: RpcClient<typeof LimiterService>,
    private readonly telemetry: Telemetry,
  ) {}

  /** estimatedTokens: what to reserve on a pool with token limits (0 elsewhere). high: may use the pool's reserve_for_high share. */
  acquire(poolId: string, excludedKeyIds: string[], requestId: string, deadlineMs: number, ctx: Context, estimatedTokens = 0, high = false): Promise<Admission> {
    const span = trace.getSpan(ctx);
    return new Promise<Admission>((resolve, reject) => {
      this.pending.push({
        poolId,
        excludedKeyIds,
        requestId,
        estimatedTokens,
        high,
        deadlineMs,
        ctx,
        link: span ? spanLinkOf(span) : undefined,
        resolve,
        reject,
      });
      if (this.pending.length >= MAX_BATCH) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    // The latest deadline of the batch: each caller stops waiting at its own (the dispatcher races it), and a
    // grant that comes after carries the hold its caller gives back at once. The earliest would fail every
    // request of the batch with the shortest one's, and lose the holds the limiter granted them.
    let deadlineMs = batch[0].deadlineMs;
    const links: Link[] = [];
    for (let i = 1; i < batch.length; i++) {
      if (batch[i].deadlineMs > deadlineMs) deadlineMs = batch[i].deadlineMs;
      const link = batch[i].link;
      if (link) links.push(link);
    }
    const batchSpan = this.telemetry.tracer.startSpan(
      'keymesh.admit.batch',
      { kind: SpanKind.INTERNAL, links, attributes: { [attr.KEYMESH_COMPONENT]: 'router', [attr.KEYMESH_BATCH_SIZE]: batch.length } },
      batch[0].ctx,
    );
    const decidedBy = batchSpan.spanContext();
    const call = this.limiter.acquireBatch(
      {
        requests: batch.map((p) => ({
          poolId: p.poolId,
          excludedKeyIds: p.excludedKeyIds,
          requestId: p.requestId,
          estimatedTokens: p.estimatedTokens,
          priority: p.high ? Priority.HIGH : Priority.UNSPECIFIED,
        })),
      },
      { deadlineMs, parent: trace.setSpan(batch[0].ctx, batchSpan) },
    );
    call.then(
      (response) => {
        batchSpan.end();
        for (let i = 0; i < batch.length; i++) batch[i].resolve(admissionOf(response.responses[i], decidedBy));
      },
      (err: unknown) => {
        batchSpan.end();
        const error = KeymeshError.from(err);
        const deadline = error.code === Code.DeadlineExceeded;
        const unavailable = new KeymeshError({
          code: deadline ? Code.DeadlineExceeded : Code.Unavailable,
          reason: deadline ? Reason.DEADLINE_EXCEEDED : Reason.UNAVAILABLE,
          message: deadline ? 'the deadline passed while waiting for admission' : 'the limiter did not answer',
          cause: err,
        });
        for (const p of batch) p.reject(unavailable);
      },
    );
  }
}

/** Only a limiter that predates hold_ttl leaves it out: assume the limiter's default. */
const DEFAULT_HOLD_TTL_MS = 30_000;

function admissionOf(response: AcquireResponse | undefined, decidedBy: SpanContext): Admission {
  if (response?.outcome === AcquireOutcome.GRANTED) {
    const granted: Admission = response.admissionId === '' ? { granted: true, keyId: response.keyId, decidedBy } : { granted: true, keyId: response.keyId, admissionId: response.admissionId, decidedBy };
    if (response.holdId !== '' && granted.granted) granted.hold = { holdId: response.holdId, ttlMs: msOfDuration(response.holdTtl) ?? DEFAULT_HOLD_TTL_MS };
    return granted;
  }
  return {
    granted: false,
    retryAfterMs: msOfDuration(response?.retryAfter),
    reason: response?.reason || Reason.KEY_POOL_EXHAUSTED,
    decidedBy,
  };
}
