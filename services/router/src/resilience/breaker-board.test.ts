import assert from 'node:assert/strict';
import { BreakerBoard } from './breaker-board';
import { DEFAULT_BREAKER_OPTIONS, Permit } from './circuit-breaker';

describe('BreakerBoard', () => {
  it('forgets the breakers of providers and keys a new policy dropped, and keeps the others as they are', () => {
    const board = new BreakerBoard();
    board.provider('openai');
    board.provider('retired-provider');
    const kept = board.key('main', 'k1');
    for (let i = 0; i < DEFAULT_BREAKER_OPTIONS.consecutiveFailures; i++) kept.failed(Permit.Pass, 'unavailable', Date.now());
    board.key('main', 'k2-rotated-out');
    board.key('retired-pool', 'k3');

    board.retain((providerId) => providerId === 'openai', (poolId, keyId) => poolId === 'main' && keyId === 'k1');

    assert.deepEqual(board.snapshot(true).map((b) => b.id), ['openai', 'main/k1']);
    assert.equal(board.key('main', 'k1'), kept);
    assert.equal(kept.state, 'open', 'a kept key keeps its state');
    assert.equal(board.key('main', 'k2-rotated-out').state, 'closed', 'a key that comes back starts afresh');
  });
});
