import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { createMemoryBus, Subjects, type Bus } from '@keymesh/bus';
import { compilePolicy, parseConfig, type Policy } from '@keymesh/config';
import { PolicyUpdatedEventSchema, type ControlService } from '@keymesh/proto/control/v1/control';
import type { RpcClient } from '@keymesh/rpc';
import { createLogger } from '@keymesh/telemetry';
import { ANNOUNCED_FETCH_SPACING_MS, followPolicy } from './follow-policy';

function policyJson(model: string): string {
  const config = parseConfig(
    `providers:
  mock: { kind: openai, base_url: http://127.0.0.1:9000/v1 }
pools:
  main:
    provider: mock
    keys:
      - { id: k1, secret: sk-test-1 }
routes:
  ${model}: { targets: [ { pool: main, model: ${model} } ] }
tenants:
  demo: { virtual_keys: [ sk-keymesh-demo ] }
`,
    'test.yaml',
  );
  return JSON.stringify(compilePolicy(config, (plaintext) => `sealed:${[...plaintext].reverse().join("")}`));
}

/** A control service whose current policy the test sets; it never broadcasts. */
function fakeControl(): { client: RpcClient<typeof ControlService>; current: { version: bigint; policyJson: string }; failing: boolean; asked: number } {
  const control = {
    current: { version: 1n, policyJson: policyJson('gpt-4o-mini') },
    failing: false,
    asked: 0,
    client: {
      getPolicy: async () => {
        control.asked++;
        if (control.failing) throw new Error('UNAVAILABLE');
        return control.current;
      },
    } as unknown as RpcClient<typeof ControlService>,
  };
  return control;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 2_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** What control publishes for a new version: the version alone. */
function announce(bus: Bus, version: bigint): void {
  bus.publishMessage(Subjects.policyUpdated, PolicyUpdatedEventSchema, create(PolicyUpdatedEventSchema, { version }));
}

/** A follower on its first policy whose resync never comes in a test: only announcements move it. */
async function followingAnnouncements() {
  const control = fakeControl();
  const bus = createMemoryBus();
  const routes: string[][] = [];
  const follower = followPolicy({ control: control.client, bus, logger: createLogger('test', 'error'), resyncMs: 3_600_000, onPolicy: (policy) => routes.push(Object.keys(policy.routes)) });
  await follower.ready;
  return { control, bus, routes, follower };
}

describe('followPolicy', () => {
  it('catches up with a policy whose broadcast it missed, by asking control again', async () => {
    const control = fakeControl();
    const applied: { version: bigint; routes: string[] }[] = [];
    const follower = followPolicy({
      control: control.client,
      bus: createMemoryBus(),
      logger: createLogger('test', 'error'),
      resyncMs: 20,
      onPolicy: (policy: Policy, version) => applied.push({ version, routes: Object.keys(policy.routes) }),
    });
    try {
      await follower.ready;
      // A new version that no bus message announces, as when this service's NATS connection blinked.
      control.current = { version: 2n, policyJson: policyJson('gpt-4o') };
      const deadline = Date.now() + 2_000;
      while (follower.version() < 2n && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual(applied, [{ version: 1n, routes: ['gpt-4o-mini'] }, { version: 2n, routes: ['gpt-4o'] }]);
    } finally {
      follower.close();
    }
  });

  it('keeps its policy while control cannot answer, and applies the same version only once', async () => {
    const control = fakeControl();
    let appliedCount = 0;
    const follower = followPolicy({ control: control.client, bus: createMemoryBus(), logger: createLogger('test', 'error'), resyncMs: 10, onPolicy: () => appliedCount++ });
    try {
      await follower.ready;
      control.failing = true;
      await new Promise((resolve) => setTimeout(resolve, 60));
      control.failing = false;
      await new Promise((resolve) => setTimeout(resolve, 60));
      assert.equal(follower.version(), 1n);
      assert.equal(appliedCount, 1);
    } finally {
      follower.close();
    }
  });

  it('applies nothing once closed, not even a resync that was already on its way', async () => {
    const control = fakeControl();
    let answer: (value: { version: bigint; policyJson: string }) => void = () => undefined;
    let asked = 0;
    const client = {
      getPolicy: () => (++asked === 1 ? Promise.resolve(control.current) : new Promise<{ version: bigint; policyJson: string }>((resolve) => (answer = resolve))),
    } as unknown as RpcClient<typeof ControlService>;
    const versions: bigint[] = [];
    const follower = followPolicy({ control: client, bus: createMemoryBus(), logger: createLogger('test', 'error'), resyncMs: 10, onPolicy: (_p, v) => versions.push(v) });
    await follower.ready;
    while (asked < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    follower.close();
    answer({ version: 2n, policyJson: policyJson('gpt-4o') });
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.deepEqual(versions, [1n]);
  });

  it('fetches an announced version from control at once, without waiting for the resync', async () => {
    const { control, bus, routes, follower } = await followingAnnouncements();
    try {
      control.current = { version: 2n, policyJson: policyJson('gpt-4o') };
      announce(bus, 2n);
      await until(() => follower.version() === 2n, 'the announced version');
      assert.deepEqual(routes, [['gpt-4o-mini'], ['gpt-4o']]);
    } finally {
      follower.close();
    }
  });

  it('takes a policy only from control: a policy carried on the bus is never applied', async () => {
    const { control, bus, routes, follower } = await followingAnnouncements();
    try {
      // What a forger on NATS would send, in the shape events once had: a high version and a policy of its own (field 2).
      const forged = new BinaryWriter().tag(1, WireType.Varint).uint64(99n).tag(2, WireType.LengthDelimited).string(policyJson('exfiltrate')).finish();
      bus.publish(Subjects.policyUpdated, forged);
      await until(() => control.asked >= 2 || routes.length > 1, 'the follower to act on the announcement');
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(routes, [['gpt-4o-mini']], 'only control decides the policy');
      assert.equal(follower.version(), 1n);
    } finally {
      follower.close();
    }
  });

  it('spaces its fetches when announcements keep coming, each naming a version control never serves', async () => {
    const { control, bus, follower } = await followingAnnouncements();
    try {
      const askedBefore = control.asked;
      const started = Date.now();
      let version = 2n;
      // Bursts and a steady trickle, as a forger on NATS would send them.
      while (Date.now() - started < 5 * ANNOUNCED_FETCH_SPACING_MS) {
        for (let i = 0; i < 50; i++) announce(bus, version++);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const fetches = control.asked - askedBefore;
      const elapsed = Date.now() - started;
      assert.ok(fetches >= 2, `only ${fetches} fetches`);
      assert.ok(fetches <= 1 + elapsed / ANNOUNCED_FETCH_SPACING_MS, `${fetches} fetches in ${elapsed} ms`);
      assert.equal(follower.version(), 1n);
    } finally {
      follower.close();
    }
  });

  it('chases an announced version until control serves it, as in a rolling restart of control', async () => {
    const { control, bus, follower } = await followingAnnouncements();
    try {
      // The new control announces; GetPolicy still reaches the old one for a while, and then nothing.
      announce(bus, 2n);
      await until(() => control.asked >= 3, 'fetches from the old control');
      control.failing = true;
      await until(() => control.asked >= 5, 'fetches while no control answers');
      control.failing = false;
      control.current = { version: 2n, policyJson: policyJson('gpt-4o') };
      await until(() => follower.version() === 2n, 'the announced version');
    } finally {
      follower.close();
    }
  });

  it('fetches again when a newer version is announced while a fetch is on its way', async () => {
    const control = fakeControl();
    let answerSlowly: ((value: { version: bigint; policyJson: string }) => void) | undefined;
    const client = {
      getPolicy: () => {
        control.asked++;
        return control.asked === 2 ? new Promise<{ version: bigint; policyJson: string }>((resolve) => (answerSlowly = resolve)) : Promise.resolve(control.current);
      },
    } as unknown as RpcClient<typeof ControlService>;
    const bus = createMemoryBus();
    const follower = followPolicy({ control: client, bus, logger: createLogger('test', 'error'), resyncMs: 3_600_000, onPolicy: () => undefined });
    try {
      await follower.ready;
      announce(bus, 2n);
      await until(() => answerSlowly !== undefined, 'the first fetch');
      control.current = { version: 3n, policyJson: policyJson('gpt-4o') };
      announce(bus, 3n);
      // Let the announcement of 3 arrive before the fetch started for 2 answers.
      await new Promise((resolve) => setImmediate(resolve));
      answerSlowly?.({ version: 2n, policyJson: policyJson('gpt-4o-mini') });
      await until(() => follower.version() === 3n, 'the version announced during the fetch');
    } finally {
      follower.close();
    }
  });
});
