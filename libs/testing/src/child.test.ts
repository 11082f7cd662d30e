import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync, realpathSync } from 'node:fs';
import { spawnNode, type ChildHandle } from './child';
import { waitFor } from './wait';

const fixture = join(__dirname, 'fixtures', 'child-fixture.js');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // An unreaped zombie still answers kill(0); it is dead all the same.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe('spawnNode', () => {
  const children: ChildHandle[] = [];
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.stop('SIGKILL', 1000)));
  });
  const start = (args: string[], opts?: Parameters<typeof spawnNode>[2]): ChildHandle => {
    const child = spawnNode(fixture, args, opts);
    children.push(child);
    return child;
  };

  it('resolves waitForLine with the match once the line is printed, capturing stderr too', async () => {
    const child = start(['ready', '4321']);
    const match = await child.waitForLine(/listening on port (\d+)/, 5000);
    assert.equal(match[1], '4321');
    assert.match(child.output(), /starting up/);
  });

  it('matches a line printed before waitForLine was called', async () => {
    const child = start(['ready', '1']);
    await child.waitForLine(/listening/, 5000);
    const match = await child.waitForLine(/^starting (up)$/g, 100);
    assert.equal(match[1], 'up');
  });

  it('passes env overrides and removals and the working directory', async () => {
    process.env['KEYMESH_B'] = 'inherited';
    try {
      const cwd = realpathSync(tmpdir());
      const child = start(['env'], { env: { KEYMESH_A: 'set', KEYMESH_B: undefined }, cwd });
      const match = await child.waitForLine(/^KEYMESH_A=(\S+) KEYMESH_B=(\S+) cwd=(.+)$/, 5000);
      assert.deepEqual(match.slice(1), ['set', '<unset>', cwd]);
    } finally {
      delete process.env['KEYMESH_B'];
    }
  });

  it('stops with SIGTERM and returns the exit code', async () => {
    const child = start(['ready']);
    await child.waitForLine(/listening/, 5000);
    assert.equal(await child.stop(), 7);
    assert.match(child.output(), /draining/);
    assert.equal(alive(child.pid), false);
  });

  it('escalates to SIGKILL when the process ignores the signal', async () => {
    const child = start(['stubborn']);
    await child.waitForLine(/^ready$/, 5000);
    const started = Date.now();
    assert.equal(await child.stop('SIGTERM', 300), null);
    assert.ok(Date.now() - started < 3000);
    assert.match(child.output(), /ignoring SIGTERM/);
  });

  it('kills the whole process group, grandchildren included', async () => {
    const child = start(['grandchild']);
    const [, pid] = await child.waitForLine(/^grandchild (\d+)$/, 5000);
    assert.equal(alive(Number(pid)), true);
    await child.stop();
    await waitFor(() => !alive(Number(pid)), { timeoutMs: 2000, what: 'the grandchild to die' });
  });

  it('rejects waitForLine when the process exits first, quoting its output', async () => {
    const child = start(['crash']);
    await assert.rejects(child.waitForLine(/listening/, 5000), (err: Error) => {
      assert.match(err.message, /exited \(code 3\) before printing a line matching \/listening\//);
      assert.match(err.message, /fatal: bad config/);
      return true;
    });
    assert.equal(await child.stop(), 3);
  });

  it('rejects waitForLine after the timeout', async () => {
    const child = start(['stubborn']);
    await assert.rejects(child.waitForLine(/never/, 200), /timed out after 200 ms .* matching \/never\//s);
  });
});
