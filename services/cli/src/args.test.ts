import assert from 'node:assert/strict';
import { parseArgs, stringFlag } from './args';
import { configFrom } from './lifecycle';

describe('command-line flags', () => {
  it('reads a flag given as --name value or --name=value', () => {
    assert.equal(stringFlag(parseArgs(['up', '--config', 'a.yaml']), 'config'), 'a.yaml');
    assert.equal(stringFlag(parseArgs(['up', '--config=b.yaml']), 'config'), 'b.yaml');
    assert.equal(stringFlag(parseArgs(['up']), 'config'), undefined);
  });

  it('refuses an empty --config (an unset variable) instead of starting the demo config in its place', async () => {
    for (const argv of [['up', '--config', ''], ['up', '--config='], ['up', '--config']]) {
      await assert.rejects(configFrom(parseArgs(argv)), /--config needs a value/, argv.join(' '));
    }
  });
});
