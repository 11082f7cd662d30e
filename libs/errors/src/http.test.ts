import assert from 'node:assert/strict';
import { anthropicErrorBody, openAiErrorBody, toHttpError } from './http';
import { Code, KeymeshError, Reason, type KeymeshErrorInit } from './keymesh-error';

const error = (init: Partial<KeymeshErrorInit> & Pick<KeymeshErrorInit, 'code' | 'reason'>): KeymeshError =>
  new KeymeshError({ message: 'something happened', ...init });

describe('HTTP error mapping', () => {
  it('answers 429 with retry-after in whole seconds, rounded up', () => {
    const http = toHttpError(error({ code: Code.ResourceExhausted, reason: Reason.KEY_POOL_EXHAUSTED, retryAfterMs: 1500 }));
    assert.equal(http.status, 429);
    assert.equal(http.retryAfterSeconds, 2);
    assert.equal(http.openAiType, 'rate_limit_error');
    assert.equal(http.anthropicType, 'rate_limit_error');
  });

  it('never tells a caller to retry after zero seconds', () => {
    assert.equal(toHttpError(error({ code: Code.ResourceExhausted, reason: Reason.KEY_POOL_EXHAUSTED, retryAfterMs: 10 })).retryAfterSeconds, 1);
    assert.equal(toHttpError(error({ code: Code.ResourceExhausted, reason: Reason.KEY_POOL_EXHAUSTED, retryAfterMs: 1001 })).retryAfterSeconds, 2);
    assert.equal(toHttpError(error({ code: Code.ResourceExhausted, reason: Reason.KEY_POOL_EXHAUSTED, retryAfterMs: 3000 })).retryAfterSeconds, 3);
  });

  it('sends no retry-after when waiting would not help', () => {
    assert.equal(toHttpError(error({ code: Code.InvalidArgument, reason: Reason.INVALID_REQUEST })).retryAfterSeconds, undefined);
  });

  it('answers 401 for an unauthenticated caller', () => {
    const http = toHttpError(error({ code: Code.Unauthenticated, reason: Reason.UNAUTHENTICATED }));
    assert.equal(http.status, 401);
    assert.equal(http.openAiType, 'authentication_error');
  });

  it('answers 400 for an invalid request', () => {
    const http = toHttpError(error({ code: Code.InvalidArgument, reason: Reason.INVALID_REQUEST }));
    assert.equal(http.status, 400);
    assert.equal(http.openAiType, 'invalid_request_error');
  });

  it('answers 404 for an unknown route', () => {
    const http = toHttpError(error({ code: Code.NotFound, reason: Reason.ROUTE_NOT_FOUND }));
    assert.equal(http.status, 404);
    assert.equal(http.anthropicType, 'not_found_error');
  });

  it('answers 413 for BODY_TOO_LARGE though its code is INVALID_ARGUMENT', () => {
    assert.equal(toHttpError(error({ code: Code.InvalidArgument, reason: Reason.BODY_TOO_LARGE })).status, 413);
  });

  it('answers 502 for a provider error and 503 for an unavailable provider', () => {
    assert.equal(toHttpError(error({ code: Code.Unavailable, reason: Reason.PROVIDER_ERROR })).status, 502);
    assert.equal(toHttpError(error({ code: Code.Internal, reason: Reason.PROVIDER_UNAVAILABLE })).status, 503);
  });

  it('shapes the body as OpenAI does', () => {
    const err = error({ code: Code.ResourceExhausted, reason: Reason.KEY_POOL_EXHAUSTED, message: 'all keys are busy' });
    assert.deepEqual(openAiErrorBody(err), {
      error: { message: 'all keys are busy', type: 'rate_limit_error', param: null, code: 'rate_limit_exceeded' },
    });
    // Reasons OpenAI has no code for keep keymesh's own, lower-cased.
    assert.equal(openAiErrorBody(error({ code: Code.Unavailable, reason: Reason.KEY_POOL_UNAVAILABLE })).error.code, 'key_pool_unavailable');
    assert.equal(openAiErrorBody(error({ code: Code.NotFound, reason: Reason.ROUTE_NOT_FOUND })).error.code, 'model_not_found');
    assert.equal(openAiErrorBody(error({ code: Code.InvalidArgument, reason: Reason.INVALID_REQUEST }), 'messages').error.param, 'messages');
  });

  it('shapes the body as Anthropic does', () => {
    const err = error({ code: Code.Unavailable, reason: Reason.PROVIDER_UNAVAILABLE, message: 'try later' });
    assert.deepEqual(anthropicErrorBody(err), { type: 'error', error: { type: 'overloaded_error', message: 'try later' } });
  });

  it('never puts the cause in a body', () => {
    const err = KeymeshError.from(new Error('Authorization: Bearer sk-secret'));
    assert.ok(!JSON.stringify(openAiErrorBody(err)).includes('sk-secret'));
    assert.ok(!JSON.stringify(anthropicErrorBody(err)).includes('sk-secret'));
    assert.equal(toHttpError(err).status, 500);
  });
});
