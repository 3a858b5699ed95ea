/**
 * Outbound webhooks end to end: `profile.created` (explicit and implicit), an api channel's
 * `response.*` webhook, signatures, GET query parameters, the retry schedule, `runCount`, and
 * the private-address guard before the request and at connect time.
 */
import dns from 'node:dns';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { nextAttempt, retryDelayMs } from '../../src/channels/retry.js';
import { startFakeAnthropic, type FakeAnthropic } from '../fakes/anthropic.js';
import { startWebhookReceiver, verifySignature, type ReceivedHook, type WebhookReceiver } from '../fakes/webhook-receiver.js';
import { deploy } from '../files/bundle.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { client, onTurn } from '../responses/helpers.js';

const BASE_MS = 50;
let t: TestServer;
let fake: FakeAnthropic;
let receiver: WebhookReceiver;
let api: ReturnType<typeof client>;
let key: string;
let apps = 0;

beforeAll(async () => {
  fake = await startFakeAnthropic();
  receiver = await startWebhookReceiver();
  t = await startTestServer({ listen: true, config: { webhookRetryBaseMs: BASE_MS, anthropicBaseUrl: fake.url, anthropicApiKey: fake.apiKey } });
  key = (await t.org()).key;
  api = client(t, key);
});

afterAll(async () => {
  await t?.close();
  await fake?.close();
  await receiver?.close();
});

/** A fresh app, so its webhooks see only this test's profiles. */
async function newApp(opts: { deployed?: boolean } = {}): Promise<string> {
  const appId = (await api.call('POST', '/v1/app/create', { slug: `hooks-${++apps}`, type: 'claude' })).body.data.id;
  if (opts.deployed) await deploy(t, key, appId, { 'CLAUDE.md': '# hooks\n' });
  return appId;
}

async function newWebhook(appId: string, body: Record<string, unknown>) {
  const res = await api.call('POST', '/v1/webhook/create', { appId, event: 'profile.created', ...body });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.data as { id: string; secret: string };
}

const deliveries = (where: { webhookId?: string; channelId?: string }) =>
  t.ctx.db.selectFrom('webhookDeliveries').selectAll().where(where.webhookId ? 'webhookId' : 'channelId', '=', (where.webhookId ?? where.channelId)!).execute();

function expectSigned(hook: ReceivedHook, secret: string) {
  const sig = verifySignature(secret, hook);
  expect(sig.valid, `signature of ${hook.path}`).toBe(true);
  expect(Math.abs(sig.t - Date.now() / 1000)).toBeLessThan(60);
  expect(verifySignature(`${secret}x`, hook).valid).toBe(false);
}

describe('profile.created', () => {
  it('is delivered once, signed with the secret, with the configured method and headers, carrying the profile as GET shows it', async () => {
    const appId = await newApp({ deployed: true });
    const hook = await newWebhook(appId, { method: 'PUT', url: `${receiver.url}/created`, headers: { 'X-Api-Token': 'tok_live_0123456789' } });
    const profile = (await api.call('POST', '/v1/profile/create', { appId, identifier: 'ada', metadata: { plan: 'gold' } })).body.data;

    const [got] = await eventually(async () => (receiver.at('/created').length > 0 ? receiver.at('/created') : null), 'the delivery');
    expect(got.method).toBe('PUT');
    expect(got.headers['x-api-token']).toBe('tok_live_0123456789');
    expect(got.headers['content-type']).toBe('application/json');
    expectSigned(got, hook.secret);
    const body = JSON.parse(got.body);
    expect(body).toEqual({ event: 'profile.created', createdAt: expect.any(String), data: (await api.call('GET', `/v1/profile/${profile.id}`)).body.data });
    expect(body.data.headStateId).toMatch(/^state-/);

    const webhook = await eventually(async () => {
      const w = (await api.call('GET', `/v1/webhook/${hook.id}`)).body.data;
      return w.runCount === 1 && w;
    }, 'runCount 1');
    expect(Date.parse(webhook.lastTriggeredAt)).toBeGreaterThanOrEqual(got.at - 1000);
    expect(await deliveries({ webhookId: hook.id })).toEqual([expect.objectContaining({ status: 'delivered', attempts: 1, lastStatus: 200, event: 'profile.created' })]);
    expect(receiver.at('/created')).toHaveLength(1);
  });

  it('a GET webhook carries event and profileId as query parameters and no body; every webhook of the app gets its own delivery', async () => {
    const appId = await newApp();
    const get = await newWebhook(appId, { method: 'GET', url: `${receiver.url}/get-hook?source=hl` });
    const post = await newWebhook(appId, { url: `${receiver.url}/post-hook` });
    const profile = (await api.call('POST', '/v1/profile/create', { appId, identifier: 'grace' })).body.data;
    const [got] = await eventually(async () => (receiver.at('/get-hook').length > 0 ? receiver.at('/get-hook') : null), 'the GET delivery');
    expect(got.method).toBe('GET');
    expect(Object.fromEntries(got.query)).toEqual({ source: 'hl', event: 'profile.created', profileId: profile.id });
    expect(got.body).toBe('');
    expect(got.headers['content-type']).toBeUndefined();
    expectSigned(got, get.secret);
    const [posted] = await eventually(async () => (receiver.at('/post-hook').length > 0 ? receiver.at('/post-hook') : null), 'the POST delivery');
    expect(posted.method).toBe('POST');
    expectSigned(posted, post.secret);
    expect(verifySignature(get.secret, posted).valid).toBe(false);
  });

  it('ended deliveries are kept a week, then purged; pending ones stay', async () => {
    const appId = await newApp();
    const hook = await newWebhook(appId, { url: `${receiver.url}/kept` });
    await api.call('POST', '/v1/profile/create', { appId, identifier: 'old-one' });
    const [old] = await eventually(async () => {
      const rows = await deliveries({ webhookId: hook.id });
      return rows.length === 1 && rows[0].status === 'delivered' && rows;
    }, 'the first delivery');
    const eightDaysAgo = new Date(Date.now() - 8 * 86_400_000);
    await t.ctx.db.updateTable('webhookDeliveries').set({ createdAt: eightDaysAgo }).where('id', '=', old.id).execute();
    // A week-old delivery still pending (its receiver kept failing) is left to its retries.
    const pending = { ...old, id: 'dlv-StillPending0000', status: 'pending' as const, attempts: 0, lastStatus: null, deliveredAt: null };
    await t.ctx.db.insertInto('webhookDeliveries').values(pending).execute();

    // The next delivery job sweeps.
    await api.call('POST', '/v1/profile/create', { appId, identifier: 'new-one' });
    const rows = await eventually(async () => {
      const rows = await deliveries({ webhookId: hook.id });
      return rows.every((r) => r.id !== old.id) && rows.some((r) => r.status === 'delivered') && rows;
    }, 'the old delivery purged');
    expect(rows).toHaveLength(2);
    expect(rows.find((r) => r.status === 'pending')?.id).toBe(pending.id);
  });

  it('a receiver failing three times gets retries on the backoff schedule; runCount counts only the success', async () => {
    const appId = await newApp();
    const hook = await newWebhook(appId, { url: `${receiver.url}/flaky` });
    receiver.fail('/flaky', 3, 503);
    await api.call('POST', '/v1/profile/create', { appId, identifier: 'linus' });
    const hits = await eventually(async () => (receiver.at('/flaky').length >= 4 ? receiver.at('/flaky') : null), 'four attempts');
    expect(hits.map((h) => h.status)).toEqual([503, 503, 503, 200]);
    // Retry n comes at least base·2^(n−1) after the previous attempt.
    for (let n = 1; n <= 3; n++) expect(hits[n].at - hits[n - 1].at).toBeGreaterThanOrEqual(retryDelayMs(n, BASE_MS) - 5);
    // The same bytes and delivery id every time, freshly signed each time.
    expect(new Set(hits.map((h) => h.body)).size).toBe(1);
    expect(new Set(hits.map((h) => h.headers['harnesslayer-delivery'])).size).toBe(1);
    for (const h of hits) expectSigned(h, hook.secret);
    await eventually(async () => (await deliveries({ webhookId: hook.id }))[0]?.status === 'delivered', 'delivered');
    expect((await api.call('GET', `/v1/webhook/${hook.id}`)).body.data).toMatchObject({ runCount: 1, lastTriggeredAt: expect.any(String) });
    expect(await deliveries({ webhookId: hook.id })).toEqual([expect.objectContaining({ attempts: 4, lastStatus: 200, lastError: null })]);
    expect(receiver.at('/flaky')).toHaveLength(4);
  });

  it('an attempt answered 2xx is delivered at its status line, also when its body never ends', async () => {
    const appId = await newApp();
    const hook = await newWebhook(appId, { url: `${receiver.url}/unending` });
    receiver.neverEnd('/unending');
    await api.call('POST', '/v1/profile/create', { appId, identifier: 'ada' });
    await eventually(async () => (await deliveries({ webhookId: hook.id }))[0]?.status === 'delivered', 'delivered');
    expect(await deliveries({ webhookId: hook.id })).toEqual([expect.objectContaining({ attempts: 1, lastStatus: 200, lastError: null })]);
    expect((await api.call('GET', `/v1/webhook/${hook.id}`)).body.data).toMatchObject({ runCount: 1 });
    expect(receiver.at('/unending')).toHaveLength(1);
  });

  it('gives up once the retry window has passed, counting nothing', async () => {
    const appId = await newApp();
    const hook = await newWebhook(appId, { url: `${receiver.url}/down` });
    receiver.fail('/down', 1000, 500);
    const window = t.config.webhookRetryWindowMs;
    t.config.webhookRetryWindowMs = 400;
    try {
      await api.call('POST', '/v1/profile/create', { appId, identifier: 'edsger' });
      const [d] = await eventually(async () => {
        const rows = await deliveries({ webhookId: hook.id });
        return rows[0]?.status === 'failed' && rows;
      }, 'given up');
      expect(d.attempts).toBeGreaterThanOrEqual(2);
      expect(d.attempts).toBe(receiver.at('/down').length);
      expect(d).toMatchObject({ lastStatus: 500, lastError: 'answered HTTP 500' });
    } finally {
      t.config.webhookRetryWindowMs = window;
    }
    expect((await api.call('GET', `/v1/webhook/${hook.id}`)).body.data).toMatchObject({ runCount: 0, lastTriggeredAt: null });
  });

  it('the schedule: 5 s, 10 s, 20 s, … capped at 1 h, for 24 h', () => {
    expect([1, 2, 3, 4, 10, 11, 30].map((n) => retryDelayMs(n, 5000))).toEqual([5000, 10000, 20000, 40000, 2_560_000, 3_600_000, 3_600_000]);
    const config = { webhookRetryBaseMs: 5000, webhookRetryWindowMs: 24 * 3600_000 };
    const first = new Date('2026-01-01T00:00:00Z');
    expect(nextAttempt(config, { attempt: 1 }, first)).toEqual({ data: { attempt: 2, firstAttemptAt: first.toISOString() }, startAfter: new Date(first.getTime() + 5000) });
    const late = new Date(first.getTime() + 23.5 * 3600_000);
    expect(nextAttempt(config, { attempt: 30, firstAttemptAt: first.toISOString() }, late)).toBeNull();
    expect(nextAttempt(config, { attempt: 30, firstAttemptAt: first.toISOString() }, new Date(first.getTime() + 22 * 3600_000))?.data.attempt).toBe(31);
  });
});

describe('an api channel webhook and implicit profiles', () => {
  it('gets one signed response.* POST per ended instance (completed, failed, stopped) with the instance as GET shows it; response/run announces its new profile', async () => {
    const appId = await newApp({ deployed: true });
    const profileHook = await newWebhook(appId, { url: `${receiver.url}/implicit` });
    const channel = (await api.call('POST', '/v1/channel/create', { appId, slug: 'api', type: 'api', webhook: { url: `${receiver.url}/channel-hook`, headers: { Authorization: 'Bearer chan-token-0123' } } })).body.data;
    const secret = channel.webhook.secret as string;
    expect(secret).toMatch(/^whsec_[A-Za-z0-9]{32}$/);

    const slow = fake.script(onTurn('HOOK-SLOW', { blocks: [{ type: 'text', text: ['Slow ', 'answer.'] }], pauseAfter: 1 }));
    const first = (await api.run({ appId, channelId: channel.id, userId: 'hopper', input: 'HOOK-SLOW', sessionId: 'hook-s1' })).body.data;
    await slow.paused;
    const queued = (await api.run({ appId, channelId: channel.id, userId: 'hopper', input: 'later', sessionId: 'hook-s1' })).body.data;
    expect((await api.stop(queued.instanceId)).body.data.status).toBe('stopped');
    slow.resume();
    await api.events(first.instanceId);
    const broken = (await api.run({ appId, channelId: channel.id, userId: 'hopper', input: 'look', images: [{ url: `${receiver.url}/not-an-image` }] })).body.data;
    await api.events(broken.instanceId);

    const hooks = await eventually(async () => (receiver.at('/channel-hook').length >= 3 ? receiver.at('/channel-hook') : null), 'three instance webhooks');
    const byInstance = new Map(hooks.map((h) => [JSON.parse(h.body).data.id as string, h]));
    expect(hooks).toHaveLength(3);
    for (const [id, event] of [[first.instanceId, 'response.completed'], [queued.instanceId, 'response.stopped'], [broken.instanceId, 'response.failed']]) {
      const h = byInstance.get(id)!;
      expect(h.method).toBe('POST');
      expect(h.headers.authorization).toBe('Bearer chan-token-0123');
      expectSigned(h, secret);
      expect(JSON.parse(h.body)).toEqual({ event, createdAt: expect.any(String), data: await api.instance(id) });
    }
    expect(JSON.parse(byInstance.get(first.instanceId)!.body).data).toMatchObject({ status: 'completed', output: 'Slow answer.' });

    // The run created profile "hopper": announced once, to the app's webhook, with its own secret.
    const [announced] = await eventually(async () => (receiver.at('/implicit').length > 0 ? receiver.at('/implicit') : null), 'profile.created');
    expectSigned(announced, profileHook.secret);
    expect(JSON.parse(announced.body).data).toMatchObject({ id: first.profileId, identifier: 'hopper', appId });
    expect(receiver.at('/implicit')).toHaveLength(1);

    // The deliveries carry the user's turns and profile: deleting the profile deletes them.
    const about = () => t.ctx.db.selectFrom('webhookDeliveries').select('id').where('profileId', '=', first.profileId).execute();
    expect(await about()).toHaveLength(4);
    expect((await api.call('DELETE', `/v1/profile/${first.profileId}`)).status).toBe(200);
    await eventually(async () => (await api.call('GET', `/v1/profile/${first.profileId}`)).status === 404, 'the profile deleted');
    expect(await about()).toEqual([]);
    expect([...(await deliveries({ channelId: channel.id })), ...(await deliveries({ webhookId: profileHook.id }))]).toEqual([]);
  });
});

describe('the private-address guard', () => {
  /** Answers `name` with `address` (through the system resolver and/or at connect time). */
  function resolveName(name: string, answers: { check?: string; connect?: string }) {
    const realPromise = dns.promises.lookup.bind(dns.promises);
    const realLookup = dns.lookup;
    const p = vi.spyOn(dns.promises, 'lookup').mockImplementation((async (host: string, opts?: any) =>
      host === name && answers.check ? [{ address: answers.check, family: 4 }] : realPromise(host, opts)) as any);
    const l = vi.spyOn(dns, 'lookup').mockImplementation(((host: string, opts: any, cb?: any) => {
      if (typeof opts === 'function') [cb, opts] = [opts, {}];
      if (host !== name || !answers.connect) return (realLookup as any)(host, opts, cb);
      const address = answers.connect;
      process.nextTick(() => (opts?.all ? cb(null, [{ address, family: 4 }]) : cb(null, address, 4)));
    }) as any);
    return () => {
      p.mockRestore();
      l.mockRestore();
    };
  }

  async function guarded<T>(fn: () => Promise<T>): Promise<T> {
    t.config.allowPrivateUrls = false;
    try {
      return await fn();
    } finally {
      t.config.allowPrivateUrls = true;
    }
  }

  it('refuses loopback and private URLs in webhooks and channel webhooks with a 400, changing nothing', async () => {
    const appId = await newApp();
    const restore = resolveName('intranet.example', { check: '10.0.0.1' });
    try {
      await guarded(async () => {
        for (const url of ['http://localhost/hook', 'http://127.1/hook', 'http://2130706433/hook', 'http://[::ffff:127.0.0.1]/hook', 'http://intranet.example/hook']) {
          const res = await api.call('POST', '/v1/webhook/create', { appId, event: 'profile.created', url });
          expect(res.status, url).toBe(400);
          expect(res.body.error).toContain('not allowed');
          const ch = await api.call('POST', '/v1/channel/create', { appId, slug: 'guarded', type: 'api', webhook: { url } });
          expect(ch.status, url).toBe(400);
        }
        expect((await api.call('GET', `/v1/webhook/list?appId=${appId}`)).body.data.total).toBe(0);
        expect((await api.call('GET', `/v1/channel/list?appId=${appId}`)).body.data.total).toBe(0);
      });
      // With the override the same URL is accepted.
      expect((await api.call('POST', '/v1/webhook/create', { appId, event: 'profile.created', url: 'http://127.1/hook' })).status).toBe(200);
    } finally {
      restore();
    }
  });

  it('checks again at delivery: a stored loopback URL, and a name that now resolves to loopback at connect time, are never reached', async () => {
    const port = new URL(receiver.url).port;
    const appId = await newApp();
    const literal = await newWebhook(appId, { url: `${receiver.url}/literal` });
    const rebound = await newWebhook(appId, { url: `http://rebind.example:${port}/rebound` });
    // The name passes the pre-check (a public answer), then resolves to loopback when the socket connects.
    const restore = resolveName('rebind.example', { check: '93.184.215.14', connect: '127.0.0.1' });
    try {
      await guarded(async () => {
        await api.call('POST', '/v1/profile/create', { appId, identifier: 'mallory' });
        const failed = async (id: string) => {
          const [d] = await deliveries({ webhookId: id });
          return d && d.attempts >= 1 && d;
        };
        expect((await eventually(() => failed(literal.id), 'literal refused')).lastError).toContain('not allowed');
        expect((await eventually(() => failed(rebound.id), 'rebound refused')).lastError).toContain('127.0.0.1');
        expect(receiver.at('/literal')).toHaveLength(0);
        expect(receiver.at('/rebound')).toHaveLength(0);
      });
      // Control: with the override the very same resolution reaches the receiver.
      await eventually(async () => receiver.at('/rebound').length > 0 && receiver.at('/literal').length > 0, 'reached once allowed');
    } finally {
      restore();
    }
  });
});
