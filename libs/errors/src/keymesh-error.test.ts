import assert from 'node:assert/strict';
import { Code, KeymeshError, Reason } from './keymesh-error';

describe('KeymeshError', () => {
  it('hides an unknown error message behind INTERNAL and keeps it as the cause', () => {
    const thrown = new Error('redis AUTH failed for password hunter2');
    const err = KeymeshError.from(thrown);
    assert.ok(err instanceof KeymeshError);
    assert.equal(err.code, Code.Internal);
    assert.equal(err.reason, Reason.INTERNAL);
    assert.equal(err.message, 'internal error');
    assert.ok(!err.message.includes('hunter2'));
    assert.equal(err.cause, thrown);
  });

  it('hides thrown non-errors too', () => {
    const err = KeymeshError.from('sk-live-secret');
    assert.equal(err.code, Code.Internal);
    assert.equal(err.message, 'internal error');
    assert.equal(err.cause, 'sk-live-secret');
  });

  it('returns a KeymeshError unchanged', () => {
    const original = new KeymeshError({ code: Code.NotFound, reason: Reason.ROUTE_NOT_FOUND, message: 'no route "x"' });
    assert.equal(KeymeshError.from(original), original);
  });

  it('turns an abort into CANCELLED', () => {
    const controller = new AbortController();
    controller.abort();
    const err = KeymeshError.from(controller.signal.reason);
    assert.equal(err.code, Code.Cancelled);
    assert.equal(err.reason, Reason.CANCELLED);
  });
});
