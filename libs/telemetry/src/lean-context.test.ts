import assert from 'node:assert/strict';
import { createContextKey, ROOT_CONTEXT, trace, INVALID_SPAN_CONTEXT } from '@opentelemetry/api';
import { baseContext } from './lean-context';
import { extractTraceContext } from './propagation';

const A = createContextKey('keymesh.test.a');
const B = createContextKey('keymesh.test.b');

describe('baseContext', () => {
  it('reads as the root context: no values', () => {
    assert.equal(baseContext().getValue(A), undefined);
    assert.equal(trace.getSpan(baseContext()), undefined);
  });

  it('sets, shadows and deletes values as the API context does, without changing the parent', () => {
    const root = baseContext();
    const withA = root.setValue(A, 1);
    const withB = withA.setValue(B, 2);
    const shadowed = withB.setValue(A, 3);
    const deleted = shadowed.deleteValue(A);
    assert.deepEqual([withA.getValue(A), withA.getValue(B)], [1, undefined]);
    assert.deepEqual([withB.getValue(A), withB.getValue(B)], [1, 2]);
    assert.deepEqual([shadowed.getValue(A), shadowed.getValue(B)], [3, 2]);
    assert.deepEqual([deleted.getValue(A), deleted.getValue(B)], [undefined, 2]);
    assert.equal(root.getValue(A), undefined);
    assert.equal(withB.deleteValue(createContextKey('keymesh.test.absent')), withB);

    // The same answers from the API's own context.
    const api = ROOT_CONTEXT.setValue(A, 1).setValue(B, 2).setValue(A, 3).deleteValue(A);
    assert.deepEqual([api.getValue(A), api.getValue(B)], [deleted.getValue(A), deleted.getValue(B)]);
  });

  it('is what a request without a traceparent starts from, so its spans chain instead of copying a Map each', () => {
    const parent = extractTraceContext({});
    const withSpan = trace.setSpan(parent, trace.wrapSpanContext(INVALID_SPAN_CONTEXT));
    assert.equal(trace.getSpan(withSpan)?.spanContext(), INVALID_SPAN_CONTEXT);
    // The API's context keeps a Map per value; a chained one holds only its own entry.
    assert.equal('_currentContext' in withSpan, false);
  });

  it('still carries a traceparent from the headers', () => {
    const ctx = extractTraceContext({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
    const span = trace.getSpanContext(ctx);
    assert.equal(span?.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(span?.spanId, 'b7ad6b7169203331');
    assert.equal(span?.isRemote, true);
  });
});
