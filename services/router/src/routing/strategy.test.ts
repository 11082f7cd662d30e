import assert from 'node:assert/strict';
import type { PolicyRoute, PolicyTarget, RouteStrategy } from '@keymesh/config';
import { orderTargets, TargetBoard } from './strategy';

function target(model: string, extra: Partial<Pick<PolicyTarget, 'weight' | 'price'>> = {}): PolicyTarget {
  return { poolId: 'main', providerId: 'mock', model, weight: null, price: null, ...extra };
}

function route(strategy: RouteStrategy, targets: PolicyTarget[]): PolicyRoute {
  return { alias: 'r', strategy, targets, degraded: null, cacheTtlMs: null, timeoutMs: 30_000, retry: { rounds: 1, backoffMs: 100 }, maxConcurrency: null, defaultMaxTokens: 1024, maxWaitMs: 0, limits: null };
}

const models = (targets: readonly PolicyTarget[]) => targets.map((t) => t.model);

/** Evenly spread draws in [0, 1) (the golden-ratio sequence): deterministic, and uniform enough to test proportions. */
function spreadRandom(): () => number {
  let i = 0;
  return () => (++i * 0.6180339887498949) % 1;
}

describe('ordering a route\'s targets by its strategy', () => {
  it('keeps config order for fallback, as the very same array', () => {
    const r = route('fallback', [target('a'), target('b')]);
    assert.equal(orderTargets(r, new TargetBoard(), () => 0.99), r.targets);
  });

  it('draws the first target of a weighted route in proportion to weight (3:1 over 4,000 draws)', () => {
    const r = route('weighted', [target('a', { weight: 3 }), target('b', { weight: 1 })]);
    const board = new TargetBoard();
    const random = spreadRandom();
    let firstA = 0;
    for (let i = 0; i < 4_000; i++) {
      const order = orderTargets(r, board, random);
      assert.equal(order.length, 2);
      if (order[0]!.model === 'a') firstA++;
    }
    assert.ok(Math.abs(firstA / 4_000 - 0.75) < 0.02, `a first in ${firstA} of 4000`);
  });

  it('orders the rest of a weighted route by weight too, without repeating a target', () => {
    const r = route('weighted', [target('a', { weight: 1 }), target('b', { weight: 2 }), target('c', { weight: 7 })]);
    // 0.95 of the total 10 lands in c; then 0.6 of the remaining 3 lands in b (a: 0-1, b: 1-3).
    const draws = [0.95, 0.6];
    assert.deepEqual(models(orderTargets(r, new TargetBoard(), () => draws.shift()!)), ['c', 'b', 'a']);
    const again = [0.05, 0.05];
    assert.deepEqual(models(orderTargets(r, new TargetBoard(), () => again.shift()!)), ['a', 'b', 'c']);
  });

  it('puts the target with the fewest calls in flight first for least-busy, config order on ties', () => {
    const r = route('least-busy', [target('a'), target('b'), target('c')]);
    const board = new TargetBoard();
    assert.deepEqual(models(orderTargets(r, board, Math.random)), ['a', 'b', 'c']);
    board.began(board.of(r.targets[0]!));
    board.began(board.of(r.targets[0]!));
    board.began(board.of(r.targets[1]!));
    assert.deepEqual(models(orderTargets(r, board, Math.random)), ['c', 'b', 'a']);
    board.ended(board.of(r.targets[0]!), undefined);
    board.ended(board.of(r.targets[0]!), undefined);
    assert.deepEqual(models(orderTargets(r, board, Math.random)), ['a', 'c', 'b']);
  });

  it('tries unmeasured targets first for latency, then the lowest moving average of time to first byte', () => {
    const r = route('latency', [target('slow'), target('fast'), target('new')]);
    const board = new TargetBoard();
    const sample = (t: PolicyTarget, ms: number) => {
      const stats = board.of(t);
      board.began(stats);
      board.ended(stats, ms);
    };
    sample(r.targets[0]!, 400);
    sample(r.targets[1]!, 50);
    assert.deepEqual(models(orderTargets(r, board, Math.random)), ['new', 'fast', 'slow']);
    sample(r.targets[2]!, 100);
    assert.deepEqual(models(orderTargets(r, board, Math.random)), ['fast', 'new', 'slow']);
    // "fast" slows down: after a few slow answers its average passes "new".
    for (let i = 0; i < 4; i++) sample(r.targets[1]!, 300);
    assert.deepEqual(models(orderTargets(r, board, Math.random)), ['new', 'fast', 'slow']);
  });

  it('moves the latency average a fifth of the way towards each sample', () => {
    const board = new TargetBoard();
    const stats = board.of(target('a'));
    board.began(stats);
    board.ended(stats, 100);
    board.began(stats);
    board.ended(stats, 200);
    assert.equal(stats.ttfbEwmaMs, 120);
    assert.equal(stats.inFlight, 0);
  });

  it('keeps a target\'s stats across a policy reload, which brings new target objects', () => {
    const board = new TargetBoard();
    board.began(board.of(target('a')));
    assert.equal(board.of(target('a')).inFlight, 1);
    assert.equal(board.of(target('b')).inFlight, 0);
  });

  it('orders a cost route by input plus output price, cheapest first, config order on ties', () => {
    const r = route('cost', [
      target('dear', { price: { input: 2.5, output: 10 } }),
      target('cheap', { price: { input: 0.15, output: 0.6 } }),
      target('same', { price: { input: 0.6, output: 0.15 } }),
    ]);
    const order = orderTargets(r, new TargetBoard(), Math.random);
    assert.deepEqual(models(order), ['cheap', 'same', 'dear']);
    // Ordered once per policy version: prices only change with the policy.
    assert.equal(orderTargets(r, new TargetBoard(), Math.random), order);
  });
});
