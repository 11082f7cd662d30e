import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { createMemoryBus, Subjects, type Bus, type Subscription } from '@keymesh/bus';
import { UsageEventBatchSchema, UsageEventSchema } from '@keymesh/proto/analytics/v1/analytics';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { UsageRecorder } from './usage-recorder';

const event = (requestId: string) => create(UsageEventSchema, { requestId, tenantId: 't' });

/** Request ids of each batch published, in order. */
async function batchesOf(subscription: Subscription, count: number): Promise<string[][]> {
  const batches: string[][] = [];
  for await (const message of subscription) {
    batches.push(message.decode(UsageEventBatchSchema).events.map((e) => e.requestId));
    if (batches.length === count) break;
  }
  return batches;
}

describe('UsageRecorder', () => {
  let bus: Bus;
  let subscription: Subscription;

  beforeEach(() => {
    bus = createMemoryBus();
    subscription = bus.subscribe(Subjects.usageRecorded);
  });

  afterEach(async () => {
    subscription.unsubscribe();
    await bus.close();
  });

  it('sends the events of one flush interval as one message, whatever event-loop turns they came in', async () => {
    const recorder = new UsageRecorder(bus, 40);
    recorder.record(event('a'), ROOT_CONTEXT);
    await new Promise((resolve) => setImmediate(resolve));
    recorder.record(event('b'), ROOT_CONTEXT);
    await new Promise((resolve) => setTimeout(resolve, 5));
    recorder.record(event('c'), ROOT_CONTEXT);
    const started = Date.now();
    assert.deepEqual(await batchesOf(subscription, 1), [['a', 'b', 'c']]);
    assert.ok(Date.now() - started >= 25, 'the batch waited for its interval');
  });

  it('sends a full batch at once, without waiting for the interval', async () => {
    const recorder = new UsageRecorder(bus, 60_000);
    for (let i = 0; i < 512; i++) recorder.record(event(`r${i}`), ROOT_CONTEXT);
    const [batch] = await batchesOf(subscription, 1);
    assert.equal(batch.length, 512);
  });

  it('sends what is pending when flushed (the router stopping), and nothing twice', async () => {
    const recorder = new UsageRecorder(bus, 60_000);
    recorder.record(event('x'), ROOT_CONTEXT);
    recorder.flush();
    recorder.flush();
    recorder.record(event('y'), ROOT_CONTEXT);
    recorder.flush();
    assert.deepEqual(await batchesOf(subscription, 2), [['x'], ['y']]);
  });
});
