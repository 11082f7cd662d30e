import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import Redis from 'ioredis';
import { connect, StringCodec } from 'nats';
import { findBinary } from './binaries';
import { freePort } from './ports';
import { natsSendsInfo, redisAnswersPing } from './probes';
import {
  natsForTests,
  redisForTests,
  startPrivateNats,
  startPrivateRedis,
  type ExternalServer,
} from './servers';

async function portIsFree(port: number): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** Restores one env var after each test. */
function withEnv(name: string): void {
  let saved: string | undefined;
  beforeEach(() => {
    saved = process.env[name];
  });
  afterEach(() => {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  });
}

describe('findBinary', () => {
  it('names the Debian package to install when the binary is missing', () => {
    assert.throws(
      () => findBinary('keymesh-no-such-server', 'keymesh-no-such-package', '/nonexistent'),
      /keymesh-no-such-server not found.*apt-get install -y keymesh-no-such-package/,
    );
  });

  it('finds redis-server and nats-server in sbin even when PATH lacks it', () => {
    assert.match(findBinary('redis-server', 'redis-server', ''), /\/redis-server$/);
    assert.match(findBinary('nats-server', 'nats-server', ''), /\/nats-server$/);
  });
});

describe('Redis for tests', () => {
  const cleanup: ExternalServer[] = [];
  afterEach(async () => {
    await Promise.all(cleanup.splice(0).map((s) => s.stop()));
  });
  withEnv('REDIS_URL');

  it('starts a private redis-server on 127.0.0.1 that serves commands', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(redis);
    assert.equal(redis.private, true);
    assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`);
    const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await client.connect();
      await client.set('k', 'v');
      assert.equal(await client.get('k'), 'v');
      assert.deepEqual(await client.config('GET', 'save'), ['save', '']);
    } finally {
      client.disconnect();
    }
  });

  it('stops the private server and frees its port', async () => {
    const redis = await startPrivateRedis();
    await redis.stop();
    assert.equal(await redisAnswersPing(redis.url, 300), false);
    assert.equal(await portIsFree(redis.port), true);
    await redis.stop(); // idempotent
  });

  it('pauses a private server so it answers nothing until resumed', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(redis);
    redis.pause();
    assert.equal(await redisAnswersPing(redis.url, 300), false);
    redis.resume();
    assert.equal(await redisAnswersPing(redis.url, 1000), true);
  });

  it('restarts a killed server on the same port', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(redis);
    await redis.kill();
    assert.equal(await redisAnswersPing(redis.url, 300), false);
    await redis.restart();
    assert.equal(await redisAnswersPing(redis.url, 1000), true);
  });

  it('restarts a running or paused server on the same port', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(redis);
    await redis.restart();
    assert.equal(await redisAnswersPing(redis.url, 1000), true);
    redis.pause();
    await redis.restart();
    assert.equal(await redisAnswersPing(redis.url, 1000), true);
  });

  it('uses the server at REDIS_URL when it answers, and stop() leaves it running', async () => {
    const shared = await startPrivateRedis();
    cleanup.push(shared);
    process.env['REDIS_URL'] = shared.url;
    const redis = await redisForTests();
    assert.deepEqual({ url: redis.url, port: redis.port, private: redis.private }, {
      url: shared.url,
      port: shared.port,
      private: false,
    });
    await redis.stop();
    assert.equal(await redisAnswersPing(shared.url, 1000), true);
  });

  it('starts a private server when nothing answers at REDIS_URL', async () => {
    const deadPort = await freePort();
    process.env['REDIS_URL'] = `redis://127.0.0.1:${deadPort}`;
    const redis = await redisForTests();
    cleanup.push(redis);
    assert.equal(redis.private, true);
    assert.notEqual(redis.port, deadPort);
    assert.equal(await redisAnswersPing(redis.url, 1000), true);
    await redis.stop();
    assert.equal(await redisAnswersPing(redis.url, 300), false);
  });
});

describe('NATS for tests', () => {
  const cleanup: ExternalServer[] = [];
  afterEach(async () => {
    await Promise.all(cleanup.splice(0).map((s) => s.stop()));
  });
  withEnv('NATS_URL');

  it('starts a private nats-server with JetStream on 127.0.0.1', async () => {
    const nats = await startPrivateNats();
    cleanup.push(nats);
    assert.equal(nats.private, true);
    assert.equal(nats.url, `nats://127.0.0.1:${nats.port}`);
    const nc = await connect({ servers: nats.url, reconnect: false });
    try {
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: 'EVENTS', subjects: ['events.>'] });
      const ack = await nc.jetstream().publish('events.one', StringCodec().encode('hi'));
      assert.equal(ack.stream, 'EVENTS');
    } finally {
      await nc.close();
    }
  });

  it('keeps JetStream data across kill and restart on the same port', async () => {
    const nats = await startPrivateNats();
    cleanup.push(nats);
    let nc = await connect({ servers: nats.url, reconnect: false });
    await (await nc.jetstreamManager()).streams.add({ name: 'KEEP', subjects: ['keep.>'] });
    await nc.jetstream().publish('keep.a', StringCodec().encode('x'));
    await nc.close();

    await nats.kill();
    assert.equal(await natsSendsInfo(nats.url, 300), false);
    await nats.restart();

    nc = await connect({ servers: nats.url, reconnect: false });
    try {
      const info = await (await nc.jetstreamManager()).streams.info('KEEP');
      assert.equal(info.state.messages, 1);
    } finally {
      await nc.close();
    }
  });

  it('pauses a private server so it accepts no client until resumed', async () => {
    const nats = await startPrivateNats();
    cleanup.push(nats);
    nats.pause();
    assert.equal(await natsSendsInfo(nats.url, 300), false);
    nats.resume();
    assert.equal(await natsSendsInfo(nats.url, 1000), true);
  });

  it('stops the private server and frees its port', async () => {
    const nats = await startPrivateNats();
    await nats.stop();
    assert.equal(await natsSendsInfo(nats.url, 300), false);
    assert.equal(await portIsFree(nats.port), true);
  });

  it('uses the server at NATS_URL when it accepts a connection', async () => {
    const shared = await startPrivateNats();
    cleanup.push(shared);
    process.env['NATS_URL'] = shared.url;
    const nats = await natsForTests();
    assert.deepEqual({ url: nats.url, port: nats.port, private: nats.private }, {
      url: shared.url,
      port: shared.port,
      private: false,
    });
    await nats.stop();
    assert.equal(await natsSendsInfo(shared.url, 1000), true);
  });

  it('starts a private server when nothing answers at NATS_URL', async () => {
    const deadPort = await freePort();
    process.env['NATS_URL'] = `127.0.0.1:${deadPort}`;
    const nats = await natsForTests();
    cleanup.push(nats);
    assert.equal(nats.private, true);
    assert.notEqual(nats.port, deadPort);
    assert.equal(await natsSendsInfo(nats.url, 1000), true);
  });
});
