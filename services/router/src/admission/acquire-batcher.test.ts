import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import { AcquireBatchResponseSchema, AcquireOutcome, type AcquireBatchRequest, type LimiterService } from '@keymesh/proto/limiter/v1/limiter';
import type { RpcClient } from '@keymesh/rpc';
import { createTelemetry } from '@keymesh/telemetry';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { AcquireBatcher } from './acquire-batcher';

/** A limiter that grants every request after `answerAfterMs`, and keeps to the call's deadline as grpc-js does. */
function slowLimiter(answerAfterMs: number) {
  const deadlines: number[] = [];
  const client = {
    acquireBatch: (request: AcquireBatchRequest, options: { deadlineMs: number }) => {
      deadlines.push(options.deadlineMs);
      return new Promise((resolve, reject) => {
        const answer = setTimeout(() => {
          clearTimeout(expire);
          resolve(create(AcquireBatchResponseSchema, { responses: request.requests.map(() => ({ outcome: AcquireOutcome.GRANTED, keyId: 'k1', holdId: '7' })) }));
        }, answerAfterMs);
        const expire = setTimeout(() => {
          clearTimeout(answer);
          reject(new KeymeshError({ code: Code.DeadlineExceeded, reason: Reason.DEADLINE_EXCEEDED, message: 'deadline exceeded' }));
        }, options.deadlineMs - Date.now());
      });
    },
  } as unknown as RpcClient<typeof LimiterService>;
  return { client, deadlines };
}

describe('batched admission', () => {
  it('gives a batch the latest deadline of its requests, so a short one does not fail the rest', async () => {
    const limiter = slowLimiter(60);
    const batcher = new AcquireBatcher(limiter.client, createTelemetry('acquire-batcher-test'));
    const nowMs = Date.now();
    // Both arrive in one turn and travel in one call; the first caller gives up at its own deadline (the dispatcher's job).
    const short = batcher.acquire('main', [], 'r1', nowMs + 20, ROOT_CONTEXT);
    const long = batcher.acquire('main', [], 'r2', nowMs + 5_000, ROOT_CONTEXT);
    const [shortAdmission, longAdmission] = await Promise.all([short, long]);
    assert.equal(limiter.deadlines.length, 1);
    assert.equal(limiter.deadlines[0], nowMs + 5_000);
    assert.equal(longAdmission.granted, true);
    // The short one's grant still arrives: it carries the hold its caller must give back.
    assert.equal(shortAdmission.granted && shortAdmission.hold?.holdId, '7');
  });

  it('fails the batch as past its deadline when even the latest one passed', async () => {
    const limiter = slowLimiter(200);
    const batcher = new AcquireBatcher(limiter.client, createTelemetry('acquire-batcher-test'));
    await assert.rejects(batcher.acquire('main', [], 'r1', Date.now() + 20, ROOT_CONTEXT), (err: KeymeshError) => err.code === Code.DeadlineExceeded);
  });
});
