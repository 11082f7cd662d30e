import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';

const MAIN = join(__dirname, 'main.js');
const SECRET = 'sk-cli-never-printed';

function run(args: string[]): { child: ChildProcessWithoutNullStreams; output: () => string } {
  const child = spawn(process.execPath, [MAIN, ...args]);
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  return { child, output: () => output };
}

/** Resolves with the first line on stdout, leaving the stream open for the rest of the output. */
function firstLine(child: ChildProcessWithoutNullStreams): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: string): void => {
      buffered += chunk;
      const end = buffered.indexOf('\n');
      if (end === -1) return;
      child.stdout.off('data', onData);
      resolve(buffered.slice(0, end));
    };
    child.stdout.on('data', onData);
    child.once('exit', () => reject(new Error('the process ended before printing a line')));
  });
}

describe('mock provider CLI', () => {
  it('prints its URL when ready, serves, and exits cleanly on SIGTERM without printing secrets', async () => {
    const options = JSON.stringify({ keys: [{ secret: SECRET }], streamChunks: 2 });
    const { child, output } = run(['--port', '0', '--host', '127.0.0.1', '--options-json', options]);
    const exited = once(child, 'exit');
    const line = await firstLine(child);
    const match = /^mock provider listening on (http:\/\/127\.0\.0\.1:\d+\/v1)$/.exec(line);
    assert.ok(match, line);

    const res = await fetch(`${match[1]}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'cli' }] }),
    });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { object: string }).object, 'chat.completion');

    child.kill('SIGTERM');
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0);
    assert.ok(!output().includes(SECRET));
  });

  it('exits non-zero on invalid options without repeating the JSON', async () => {
    const { child, output } = run(['--options-json', `{"keys":[{"secret":"${SECRET}"},{"secret":"${SECRET}"}]}`]);
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 1);
    assert.match(output(), /keys\[1\]\.secret/);
    assert.ok(!output().includes(SECRET));
  });
});
