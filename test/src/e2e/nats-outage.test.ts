import assert from 'node:assert/strict';
import { connectNatsBus, type Bus } from '@keymesh/bus';
import { startPrivateNats, waitFor, type PrivateServer } from '@keymesh/testing';
import type { Logger } from '@keymesh/telemetry';

/** A logger that keeps its warnings, to see what the bus said. */
function listeningLogger(): Logger & { warnings: { message: string; fields: Record<string, unknown> | undefined }[] } {
  const warnings: { message: string; fields: Record<string, unknown> | undefined }[] = [];
  return { warnings, debug: () => undefined, info: () => undefined, warn: (message, fields) => void warnings.push({ message, fields }), error: () => undefined };
}

describe('the NATS bus while NATS is down', () => {
  let nats: PrivateServer | undefined;
  let bus: Bus | undefined;
  afterEach(async () => {
    await bus?.close().catch(() => undefined);
    await nats?.stop();
    [bus, nats] = [undefined, undefined];
  });

  it('keeps what fits its publish budget for after the outage, and drops (and counts) the rest instead of growing', async function () {
    this.timeout(30_000);
    nats = await startPrivateNats();
    const logger = listeningLogger();
    const said = (message: string) => logger.warnings.find((w) => w.message === message);
    bus = await connectNatsBus({ url: nats.url, name: 'outage-publisher', logger, maxBufferedBytes: 64 * 1024 });

    await nats.kill();
    await waitFor(() => said('nats disconnect'), { timeoutMs: 5_000, what: 'the bus to notice the outage' });
    // 1 MiB of events in 16 KiB messages: 16 times the budget.
    const event = new Uint8Array(16 * 1024);
    for (let i = 0; i < 64; i++) bus.publish('outage.events', event);
    assert.ok(said('NATS unreachable and the publish buffer full: dropping bus messages until it is back'), JSON.stringify(logger.warnings));

    await nats.restart();
    const report = await waitFor(() => said('bus messages dropped while NATS was unreachable'), { timeoutMs: 10_000, what: 'the bus to reconnect' });
    // Four fit the budget and went out on reconnect; the other sixty were never kept.
    assert.equal(report.fields?.['dropped'], 60);
    await bus.flush();
  });
});
