import assert from 'node:assert/strict';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import { ErrorInfoSchema } from '@keymesh/proto/google/rpc/error_details';
import { StatusSchema } from '@keymesh/proto/google/rpc/status';
import { Code, KeymeshError, Reason } from './keymesh-error';
import { fromStatusDetails, toStatusDetails } from './status-details';

describe('status details', () => {
  it('round-trips code, reason, message, metadata and retryAfterMs', () => {
    const sent = new KeymeshError({
      code: Code.ResourceExhausted,
      reason: Reason.KEY_POOL_EXHAUSTED,
      message: 'no key of pool "openai-main" is free',
      retryAfterMs: 1500,
      metadata: { poolId: 'openai-main', route: 'gpt-4o-mini' },
    });
    const received = fromStatusDetails(sent.code, sent.message, toStatusDetails(sent));
    assert.equal(received.code, Code.ResourceExhausted);
    assert.equal(received.reason, Reason.KEY_POOL_EXHAUSTED);
    assert.equal(received.message, sent.message);
    assert.deepEqual(received.metadata, { poolId: 'openai-main', route: 'gpt-4o-mini' });
    assert.equal(received.retryAfterMs, 1500);
  });

  it('leaves retryAfterMs undefined when none was sent', () => {
    const sent = new KeymeshError({ code: Code.NotFound, reason: Reason.ROUTE_NOT_FOUND, message: 'no route' });
    const received = fromStatusDetails(sent.code, sent.message, toStatusDetails(sent));
    assert.equal(received.retryAfterMs, undefined);
    assert.equal(received.reason, Reason.ROUTE_NOT_FOUND);
  });

  it('writes ErrorInfo in the keymesh domain', () => {
    const sent = new KeymeshError({ code: Code.Unavailable, reason: Reason.PROVIDER_UNAVAILABLE, message: 'down' });
    const status = fromBinary(StatusSchema, toStatusDetails(sent));
    assert.equal(status.code, Code.Unavailable);
    const info = anyUnpack(status.details[0], ErrorInfoSchema);
    assert.equal(info?.domain, 'keymesh');
    assert.equal(info?.reason, Reason.PROVIDER_UNAVAILABLE);
  });

  it('tolerates malformed details bytes and keeps code and message', () => {
    const garbage = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    const received = fromStatusDetails(Code.Unavailable, 'upstream went away', garbage);
    assert.equal(received.code, Code.Unavailable);
    assert.equal(received.message, 'upstream went away');
    assert.deepEqual(received.metadata, {});
    assert.equal(received.retryAfterMs, undefined);
  });

  it('names the reason after the code, as a Reason constant, when a peer sent no details', () => {
    assert.equal(fromStatusDetails(Code.DeadlineExceeded, 'deadline', undefined).reason, Reason.DEADLINE_EXCEEDED);
    assert.equal(fromStatusDetails(Code.Unavailable, 'no connection', new Uint8Array()).reason, Reason.UNAVAILABLE);
  });

  it('ignores details it does not know', () => {
    const status = create(StatusSchema, { code: Code.Internal, message: 'x', details: [{ typeUrl: 'type.googleapis.com/foo.Bar', value: new Uint8Array([1, 2]) }] });
    const received = fromStatusDetails(Code.Internal, 'x', toBinary(StatusSchema, status));
    assert.equal(received.code, Code.Internal);
  });
});
