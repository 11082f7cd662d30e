import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createTelemetry, extractTraceContext, InMemorySpanExporter, type Logger, enableAsyncContext } from '@keymesh/telemetry';
import { create, equals, toBinary } from '@bufbuild/protobuf';
import { DurationSchema, TimestampSchema } from '@bufbuild/protobuf/wkt';
import { trace } from '@opentelemetry/api';
import type { Bus, BusMessage, Subscription } from './bus';
import { createMemoryBus } from './memory';
import { connectNatsBus } from './nats';

const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
const encode = (text: string): Uint8Array => new TextEncoder().encode(text);
const decode = (message: BusMessage): string => new TextDecoder().decode(message.data);

/** Bounds a wait so a broken feature fails the test instead of hanging it. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Reads exactly `count` messages, then leaves the loop (which unsubscribes). */
async function take(subscription: Subscription, count: number): Promise<BusMessage[]> {
  const messages: BusMessage[] = [];
  if (count === 0) return messages;
  for await (const message of subscription) {
    messages.push(message);
    if (messages.length === count) break;
  }
  return messages;
}

/** The same behaviour, whichever bus carries it. */
function describeBus(name: string, connect: () => Promise<Bus>): void {
  // These tests use startActiveSpan, which needs context to follow async calls.
enableAsyncContext();

describe(`${name} bus`, () => {
    let bus: Bus;
    let base: string;

    before(async () => {
      bus = await connect();
    });
    after(async () => {
      await bus.close();
    });
    beforeEach(() => {
      // Unique per test: the NATS server is shared with other suites and engineers.
      base = `keymesh.test.${randomUUID().replaceAll('-', '')}`;
    });

    it('delivers published messages, in order, with their headers', async () => {
      const subscription = bus.subscribe(`${base}.usage`);
      const received = take(subscription, 3);
      for (const text of ['one', 'two', 'three']) bus.publish(`${base}.usage`, encode(text), { 'x-tenant-id': 't1' });
      await bus.flush();
      const messages = await within(received, 5_000, 'three messages');
      assert.deepEqual(messages.map(decode), ['one', 'two', 'three']);
      assert.deepEqual(messages.map((m) => m.subject), [`${base}.usage`, `${base}.usage`, `${base}.usage`]);
      assert.equal(messages[0].headers['x-tenant-id'], 't1');
    });

    it('carries protobuf messages that subscribers decode, or read as their bytes', async () => {
      const received = take(bus.subscribe(`${base}.typed`), 2);
      const first = create(DurationSchema, { seconds: 3n, nanos: 500 });
      bus.publishMessage(`${base}.typed`, DurationSchema, first, { 'x-tenant-id': 't1' });
      bus.publishMessage(`${base}.typed`, DurationSchema, create(DurationSchema, { seconds: 7n }));
      await bus.flush();
      const [one, two] = await within(received, 5_000, 'two typed messages');
      assert.ok(equals(DurationSchema, one.decode(DurationSchema), first));
      assert.deepEqual([...one.data], [...toBinary(DurationSchema, first)]);
      assert.equal(one.headers['x-tenant-id'], 't1');
      assert.equal(two.decode(DurationSchema).seconds, 7n);
    });

    it('matches one token with * and one or more trailing tokens with >', async () => {
      const oneToken = bus.subscribe(`${base}.*.created`);
      const tail = bus.subscribe(`${base}.>`);
      const receivedByOneToken = take(oneToken, 2);
      const receivedByTail = take(tail, 4);
      for (const subject of ['key.created', 'key.deleted', 'pool.key.created', 'end.created']) {
        bus.publish(`${base}.${subject}`, encode(subject));
      }
      await bus.flush();
      assert.deepEqual((await within(receivedByOneToken, 5_000, '* matches')).map(decode), ['key.created', 'end.created']);
      assert.deepEqual((await within(receivedByTail, 5_000, '> matches')).map(decode), [
        'key.created',
        'key.deleted',
        'pool.key.created',
        'end.created',
      ]);
    });

    it('gives each message to exactly one member of a queue group', async () => {
      const count = 20;
      const members = [bus.subscribe(`${base}.work`, { queue: 'workers' }), bus.subscribe(`${base}.work`, { queue: 'workers' })];
      const receivedBy: string[][] = [[], []];
      let allReceived!: () => void;
      const all = new Promise<void>((resolve) => (allReceived = resolve));
      const reading = members.map(async (member, i) => {
        for await (const message of member) {
          receivedBy[i].push(decode(message));
          if (receivedBy[0].length + receivedBy[1].length >= count) allReceived();
        }
      });
      for (let i = 0; i < count; i++) bus.publish(`${base}.work`, encode(`job-${i}`));
      await bus.flush();
      await within(all, 5_000, `${count} jobs`);
      for (const member of members) member.unsubscribe();
      await Promise.all(reading);

      const everything = [...receivedBy[0], ...receivedBy[1]];
      assert.equal(everything.length, count, 'some job went to more than one member');
      assert.equal(new Set(everything).size, count);
      assert.ok(receivedBy[0].length > 0 && receivedBy[1].length > 0, `split ${receivedBy[0].length}/${receivedBy[1].length}`);
    });

    it('unsubscribes when the reader breaks out of its loop', async () => {
      const leaving = bus.subscribe(`${base}.work`, { queue: 'workers' });
      const first = take(leaving, 1);
      bus.publish(`${base}.work`, encode('first'));
      await bus.flush();
      assert.deepEqual((await within(first, 5_000, 'the first job')).map(decode), ['first']);
      assert.equal((await within(leaving[Symbol.asyncIterator]().next(), 1_000, 'the loop ending')).done, true);

      // Were the member that left still subscribed, it would take some of these.
      const staying = bus.subscribe(`${base}.work`, { queue: 'workers' });
      const rest = take(staying, 10);
      for (let i = 0; i < 10; i++) bus.publish(`${base}.work`, encode(`job-${i}`));
      await bus.flush();
      assert.equal((await within(rest, 5_000, 'all ten jobs at the member that stayed')).length, 10);
    });

    it("carries the publisher's active span context in the headers", async () => {
      const spans = new InMemorySpanExporter();
      const telemetry = createTelemetry('bus-test-publisher', { exporter: spans });
      const received = take(bus.subscribe(`${base}.usage`), 1);
      const published = telemetry.tracer.startActiveSpan('record usage', (span) => {
        bus.publish(`${base}.usage`, encode('usage'));
        span.end();
        return span.spanContext();
      });
      await bus.flush();
      const [message] = await within(received, 5_000, 'the usage event');
      const carried = trace.getSpanContext(extractTraceContext(message.headers));
      assert.equal(carried?.traceId, published.traceId);
      assert.equal(carried?.spanId, published.spanId);
      await telemetry.shutdown();
    });
  });
}

describeBus('in-memory', async () => createMemoryBus());

describeBus('NATS', () => connectNatsBus({ url: process.env.NATS_URL ?? 'nats://127.0.0.1:4222', name: 'keymesh-bus-test', logger: quiet }));

describe('in-memory bus delivery', () => {
  it('drops the oldest messages when a reader falls more than maxPending behind', async () => {
    const bus = createMemoryBus();
    const subscription = bus.subscribe('keymesh.test.slow', { maxPending: 2 });
    for (let i = 1; i <= 5; i++) bus.publish('keymesh.test.slow', encode(`m${i}`));
    await bus.flush();
    assert.deepEqual((await take(subscription, 2)).map(decode), ['m4', 'm5']);
    await bus.close();
  });

  it('hands a published message to subscribers as the same object, without encoding it', async () => {
    const bus = createMemoryBus();
    const received = take(bus.subscribe('keymesh.test.typed'), 1);
    const published = create(DurationSchema, { seconds: 1n });
    bus.publishMessage('keymesh.test.typed', DurationSchema, published);
    await bus.flush();
    const [message] = await received;
    assert.equal(message.decode(DurationSchema), published);
    // Read as another type, it fails or succeeds exactly as the bytes would off the wire.
    assert.equal(message.decode(TimestampSchema).seconds, 1n);
    await bus.close();
  });

  it('delivers on a later tick, never inside publish', async () => {
    const bus = createMemoryBus();
    const subscription = bus.subscribe('keymesh.test.later');
    const iterator = subscription[Symbol.asyncIterator]();
    let delivered = false;
    const next = iterator.next().then((result) => {
      delivered = true;
      return result;
    });
    bus.publish('keymesh.test.later', encode('x'));
    await Promise.resolve();
    assert.equal(delivered, false);
    assert.equal(decode((await next).value as BusMessage), 'x');
    await bus.close();
  });
});
