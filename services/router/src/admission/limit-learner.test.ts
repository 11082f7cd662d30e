import assert from 'node:assert/strict';
import type { LimitSnapshot } from '../providers';
import { LimitLearner } from './limit-learner';

const NOW = 1_700_000_000_000;

function headers(nowMs: number, limit: number | undefined, remaining: number | undefined, resetInMs: number | undefined): LimitSnapshot {
  return {
    limitRequests: limit, remainingRequests: remaining, limitTokens: undefined, remainingTokens: undefined,
    requestsResetAtMs: resetInMs === undefined ? undefined : nowMs + resetInMs, tokensResetAtMs: undefined,
    inputTokens: undefined, outputTokens: undefined, retryAfterMs: undefined,
  };
}

describe('LimitLearner', () => {
  it('reports a key\'s limit the first time, and again only when its window estimate grows', () => {
    const learner = new LimitLearner();
    assert.deepEqual(learner.observe('p', 'k', headers(NOW, 20, 19, 2_000), NOW), { learnedLimit: { requests: 20, perMs: 2_000 }, remainingRequests: 19 });
    assert.equal(learner.observe('p', 'k', headers(NOW + 100, 20, 18, 1_900), NOW + 100), undefined);
    assert.deepEqual(learner.observe('p', 'k', headers(NOW + 200, 20, 17, 3_000), NOW + 200)?.learnedLimit, { requests: 20, perMs: 3_000 });
    assert.equal(learner.shortestWindowMs('p'), 2_000);
  });

  it('reports remaining counts only near the end of the window, a few times per window, and nothing-left always', () => {
    const learner = new LimitLearner();
    learner.observe('p', 'k', headers(NOW, 20, 19, 2_000), NOW);
    assert.equal(learner.observe('p', 'k', headers(NOW + 10, 20, 10, 1_990), NOW + 10), undefined, 'plenty left');
    assert.deepEqual(learner.observe('p', 'k', headers(NOW + 200, 20, 4, 1_800), NOW + 200), { learnedLimit: undefined, remainingRequests: 4 });
    assert.equal(learner.observe('p', 'k', headers(NOW + 210, 20, 3, 1_790), NOW + 210), undefined, 'a window/20 apart at most');
    assert.deepEqual(learner.observe('p', 'k', headers(NOW + 220, 20, 0, 1_780), NOW + 220), { learnedLimit: undefined, remainingRequests: 0 });
  });

  it('reports remaining counts of a provider that states no limit (Azure) at most once a second', () => {
    const learner = new LimitLearner();
    assert.deepEqual(learner.observe('p', 'k', headers(NOW, undefined, 50, undefined), NOW), { learnedLimit: undefined, remainingRequests: 50 });
    assert.equal(learner.observe('p', 'k', headers(NOW + 500, undefined, 40, undefined), NOW + 500), undefined);
    assert.ok(learner.observe('p', 'k', headers(NOW + 1_000, undefined, 30, undefined), NOW + 1_000));
  });
});
