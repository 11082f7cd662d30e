import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { secretOf, startTestMesh, VIRTUAL_KEY, type TestMesh } from './harness';

const ask = (client: OpenAI, content: string) =>
  client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] }).withResponse();

describe('failing over between the keys of a pool', function () {
  let t: TestMesh;
  let client: OpenAI;

  afterEach(async function () {
    await t?.stop();
  });

  it('moves a request off a key that answers 429 and cools that key so later requests skip it', async function () {
    // keymesh is not told k1's limit, and the provider keeps it silent until it refuses (1 request a minute).
    t = await startTestMesh({ mockKeys: [{ limits: [{ requests: 1, perMs: 60_000 }], silentLimits: true }, {}] });
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });

    const served: string[] = [];
    for (let i = 0; i < 8; i++) {
      const { data, response } = await ask(client, `request ${i}`);
      assert.match(data.choices[0].message.content ?? '', new RegExp(`request ${i}`));
      served.push(`${response.headers.get('x-keymesh-key-id')}/${response.headers.get('x-keymesh-attempts')}`);
    }
    // Exactly one upstream 429 on k1: after it the limiter cools k1 until its retry-after.
    assert.equal(t.mock.stats(secretOf(0)).rateLimited, 1, `served: ${served.join(' ')}`);
    assert.equal(t.mock.stats(secretOf(0)).ok, 1);
    assert.ok(served.includes('k2/2'), `one request should have failed over: ${served.join(' ')}`);
    assert.equal(served.filter((s) => s.startsWith('k1')).length, 1);
  });

  it('follows the provider\'s rate-limit headers so a key whose limit keymesh was never told earns no 429', async function () {
    // Each key allows 3 requests a minute, which only the provider's x-ratelimit-* headers reveal.
    const limits = [{ requests: 3, perMs: 60_000 }];
    t = await startTestMesh({ mockKeys: [{ limits }, { limits }] });
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    let served = 0;
    let refused = 0;
    for (let i = 0; i < 10; i++) {
      try {
        await ask(client, `burst ${i}`);
        served++;
      } catch (err) {
        assert.ok(err instanceof OpenAI.RateLimitError, String(err));
        assert.ok(Number(err.headers?.get('retry-after')) > 0);
        refused++;
      }
    }
    assert.equal(served, 6);
    assert.equal(refused, 4);
    // The response that spent each key's last request said so; keymesh cooled the key before any 429.
    assert.equal(t.mock.stats(secretOf(0)).rateLimited + t.mock.stats(secretOf(1)).rateLimited, 0);
  });

  it('answers 429 with retry-after, not 503, when every key answered 429', async function () {
    const limits = [{ requests: 1, perMs: 60_000 }];
    t = await startTestMesh({ mockKeys: [{ limits, silentLimits: true }, { limits, silentLimits: true }] });
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    await ask(client, 'one');
    await ask(client, 'two');
    await assert.rejects(ask(client, 'three'), (err: unknown) => {
      assert.ok(err instanceof OpenAI.RateLimitError, String(err));
      assert.ok(Number(err.headers?.get('retry-after')) >= 50, `retry-after ${err.headers?.get('retry-after')}`);
      return true;
    });
  });

  it('parks a revoked key after its 401 and keeps serving from the others', async function () {
    t = await startTestMesh({ mockKeys: [{}, {}] });
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    t.mock.revokeKey(secretOf(1));
    for (let i = 0; i < 6; i++) {
      const { response } = await ask(client, `after revoke ${i}`);
      assert.equal(response.headers.get('x-keymesh-key-id'), 'k1');
    }
    assert.equal(t.mock.stats(secretOf(1)).unauthorized, 1);
  });

  it('answers 429 with retry-after when every key is at its declared limit, without calling the provider', async function () {
    t = await startTestMesh({ mockKeys: [{}, {}], declaredLimits: ['{ requests: 1, per: 30s }', '{ requests: 1, per: 30s }'] });
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    await ask(client, 'one');
    await ask(client, 'two');
    const response = await fetch(`${t.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'three' }] }),
    });
    assert.equal(response.status, 429);
    const retryAfter = Number(response.headers.get('retry-after'));
    // Leased slots count until their lease ends (1 s), so the window frees up to a second later.
    assert.ok(retryAfter >= 29 && retryAfter <= 31, `retry-after ${retryAfter}`);
    const body = (await response.json()) as { error: { type: string; code: string } };
    assert.equal(body.error.type, 'rate_limit_error');
    assert.equal(t.mock.stats().requests, 2);
  });

  it('gives up on a hanging provider after its timeout per key, and within the caller\'s deadline', async function () {
    t = await startTestMesh({ mockKeys: [{}, {}], providerTimeout: '200ms' });
    t.mock.setFailures({ hangRate: 1 });
    const post = async (timeout: string) => {
      const started = Date.now();
      const response = await fetch(`${t.baseUrl}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${VIRTUAL_KEY}`, 'content-type': 'application/json', 'x-keymesh-timeout': timeout },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'anyone there?' }] }),
      });
      await response.text();
      return { status: response.status, elapsedMs: Date.now() - started, attempts: response.headers.get('x-keymesh-attempts') };
    };
    // A deadline shorter than the provider's timeout ends the request at the deadline.
    const deadline = await post('150');
    assert.equal(deadline.status, 504);
    assert.ok(deadline.elapsedMs < 250, `took ${deadline.elapsedMs} ms`);
    // Each key gets 200 ms, then the next, round after round, until the provider's breaker
    // opens; then a clear 503 long before the 5 s deadline.
    const perKey = await post('5000');
    assert.equal(perKey.status, 503);
    assert.ok(perKey.elapsedMs >= 750 && perKey.elapsedMs < 3_000, `took ${perKey.elapsedMs} ms`);
  });

  it('waits for a full key when its retry-after fits the deadline, instead of refusing', async function () {
    t = await startTestMesh({ mockKeys: [{}], declaredLimits: ['{ requests: 1, per: 500ms }'] });
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    await ask(client, 'first');
    const started = Date.now();
    const { data } = await ask(client, 'second');
    assert.match(data.choices[0].message.content ?? '', /second/);
    assert.ok(Date.now() - started >= 400, 'the second request should have waited for the window');
    assert.equal(t.mock.stats().rateLimited, 0);
  });

  it('rides out a burst of 503s with another round after a backoff', async function () {
    t = await startTestMesh({ mockKeys: [{}, {}] });
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    t.mock.setFailures({ errorRate: 1 });
    // The burst ends once both keys have failed once: the first round is lost, the second serves.
    const watcher = setInterval(() => {
      if (t.mock.stats().failed >= 2) t.mock.setFailures({});
    }, 1);
    try {
      const { data, response } = await ask(client, 'after the burst');
      assert.match(data.choices[0].message.content ?? '', /after the burst/);
      assert.ok(Number(response.headers.get('x-keymesh-attempts')) >= 3);
    } finally {
      clearInterval(watcher);
    }
  });

  it('answers 503 when the provider cannot be reached, and recovers when it can', async function () {
    t = await startTestMesh({ mockKeys: [{}] });
    client = new OpenAI({ baseURL: t.baseUrl, apiKey: VIRTUAL_KEY, maxRetries: 0 });
    t.mock.setFailures({ errorRate: 1 });
    await assert.rejects(ask(client, 'down'), (err: unknown) => {
      assert.ok(err instanceof OpenAI.APIError);
      assert.equal(err.status, 503);
      return true;
    });
    t.mock.setFailures({});
    const { data } = await ask(client, 'back');
    assert.match(data.choices[0].message.content ?? '', /back/);
  });
});
