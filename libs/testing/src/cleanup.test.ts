import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnNode } from './child';
import { natsSendsInfo, redisAnswersPing } from './probes';
import { waitFor } from './wait';

const leaker = join(__dirname, 'fixtures', 'server-leaker.js');

describe('private server cleanup', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = mkdtempSync(join(tmpdir(), 'keymesh-cleanup-test-'));
  });
  afterEach(() => {
    rmSync(tmp, { recursive: true, force: true });
  });

  async function serversGone(redisUrl: string, natsUrl: string): Promise<void> {
    await waitFor(
      async () => !(await redisAnswersPing(redisUrl, 200)) && !(await natsSendsInfo(natsUrl, 200)),
      { timeoutMs: 5000, what: 'the leaked servers to die' },
    );
    await waitFor(() => readdirSync(tmp).length === 0, { timeoutMs: 2000, what: 'temp dirs to be removed' });
  }

  it('kills private servers and removes their temp dirs when the process exits', async () => {
    const child = spawnNode(leaker, ['exit'], { env: { TMPDIR: tmp } });
    const [, redisUrl, natsUrl] = await child.waitForLine(/^servers (\S+) (\S+)$/, 15000);
    await serversGone(redisUrl!, natsUrl!);
    assert.equal(await child.stop('SIGTERM', 5000), 0);
  });

  it('kills private servers when the process dies of SIGTERM', async () => {
    const child = spawnNode(leaker, ['wait'], { env: { TMPDIR: tmp } });
    const [, redisUrl, natsUrl] = await child.waitForLine(/^servers (\S+) (\S+)$/, 15000);
    assert.ok(readdirSync(tmp).length >= 2);
    process.kill(child.pid, 'SIGTERM'); // the leader only, not its process group
    await serversGone(redisUrl!, natsUrl!);
    await child.stop('SIGKILL', 1000);
  });
});
