import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type ApiReply, type TestServer } from '../helpers/server.js';

// Channels, sessions and webhooks through the API. The server runs with the private-address
// guard ON (allowPrivateUrls: false), so "public" URLs here are public IP literals: they need
// no DNS and nothing is ever delivered to them.

let t: TestServer;
let A: { key: string; id: string }; // the organization under test
let B: { key: string; id: string }; // another organization
let claudeApp: { id: string; slug: string };
let clawApp: { id: string; slug: string };
let foreignApp: { id: string; slug: string };

const PUBLIC_URL = 'https://93.184.215.14/hooks/harnesslayer';
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

function ok<T = any>(res: ApiReply<T>): T {
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  expect(res.body.success).toBe(true);
  return res.body.data;
}

function fails(res: ApiReply, status: number, code?: string): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body).toMatchObject({ success: false, error: expect.any(String) });
  if (code) expect(res.body.code).toBe(code);
}

const call = (method: string, path: string, body?: unknown, key = A.key) => t.call(method, path, { key, body });

async function createApp(key: string, slug: string, type: 'claude' | 'openclaw') {
  const data = ok(await t.call('POST', '/v1/app/create', { key, body: { slug, type } }));
  return { id: data.id as string, slug };
}

beforeAll(async () => {
  t = await startTestServer({ config: { allowPrivateUrls: false } });
  A = await t.org();
  B = await t.org();
  claudeApp = await createApp(A.key, 'claude-app', 'claude');
  clawApp = await createApp(A.key, 'claw-app', 'openclaw');
  foreignApp = await createApp(B.key, 'claude-app', 'claude');
});
afterAll(async () => t?.close());

describe('channels', () => {
  it('creates an api channel with defaults and shows it as its GET does', async () => {
    const ch = ok(await call('POST', '/v1/channel/create', { appId: claudeApp.slug, slug: 'plain-api', type: 'api' }));
    expect(ch).toEqual({
      id: expect.stringMatching(/^ch-[A-Za-z0-9]+$/),
      appId: claudeApp.id, // a slug in, the display id out
      slug: 'plain-api',
      name: 'plain-api', // name defaults to the slug
      type: 'api',
      createdAt: expect.stringMatching(ISO),
      updatedAt: expect.stringMatching(ISO),
    });
    expect(ok(await call('GET', `/v1/channel/${ch.id}`))).toEqual(ch);
  });

  it('gives an api webhook its own secret, shown once; stores secrets encrypted and shows them masked', async () => {
    const headers = { Authorization: 'Bearer my-webhook-token-123', 'X-Short': 'abc' };
    const ch = ok(
      await call('POST', '/v1/channel/create', {
        appId: claudeApp.id,
        slug: 'with-hook',
        type: 'api',
        name: 'With hook',
        webhook: { name: 'Responses', url: PUBLIC_URL, headers },
      }),
    );
    expect(ch.name).toBe('With hook');
    expect(ch.webhook).toEqual({
      name: 'Responses',
      url: PUBLIC_URL,
      headers: { Authorization: 'Bear...-123', 'X-Short': '****' },
      secret: expect.stringMatching(/^whsec_[A-Za-z0-9]{32}$/),
    });
    const got = ok(await call('GET', `/v1/channel/${ch.id}`));
    expect(got.webhook).toEqual({ name: 'Responses', url: PUBLIC_URL, headers: { Authorization: 'Bear...-123', 'X-Short': '****' } });
    const listed = ok(await call('GET', `/v1/channel/list?appId=${claudeApp.id}&pageSize=100`)).items.find((c: any) => c.id === ch.id);
    expect(listed.webhook.secret).toBeUndefined();

    const row = await t.ctx.db.selectFrom('channels').selectAll().where('id', '=', ch.id).executeTakeFirstOrThrow();
    expect(row.webhook).not.toContain('my-webhook-token-123');
    expect(row.webhook).not.toContain(ch.webhook.secret);
    expect(t.ctx.secrets.decryptJson<any>(row.webhook!)).toMatchObject({ secret: ch.webhook.secret, headers });

    // Without a webhook name: null, headers: null.
    const bare = ok(await call('POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'bare-hook', type: 'api', webhook: { url: PUBLIC_URL } }));
    expect(bare.webhook).toEqual({ name: null, url: PUBLIC_URL, headers: null, secret: expect.stringMatching(/^whsec_/) });
    expect(bare.webhook.secret).not.toBe(ch.webhook.secret);
  });

  it('creates an imessage channel with masked Sendblue data and an unguessable inbound URL', async () => {
    const data = {
      sendBlueAPIKey: 'sb_api_key_0123456789',
      sendBlueSecretKey: 'sb_secret_abcdefghijkl',
      fromNumber: '+15551234567',
      sendBlueSigningSecret: 'sign-secret-xyz-000',
    };
    const ch = ok(await call('POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'imsg', type: 'imessage', data }));
    expect(ch).toEqual({
      id: expect.stringMatching(/^ch-/),
      appId: claudeApp.id,
      slug: 'imsg',
      name: 'imsg',
      type: 'imessage',
      data: { sendBlueAPIKey: 'sb_a...6789', sendBlueSecretKey: 'sb_s...ijkl', fromNumber: '+15551234567', sendBlueSigningSecret: 'sign...-000' },
      inboundUrl: expect.stringMatching(new RegExp(`^${t.config.publicUrl.replace(/[.]/g, '\\.')}/v1/inbound/sendblue/[A-Za-z0-9]{32}$`)),
      createdAt: expect.stringMatching(ISO),
      updatedAt: expect.stringMatching(ISO),
    });
    const token = ch.inboundUrl.split('/').pop();
    expect(token).not.toContain(ch.id.slice(3));
    const row = await t.ctx.db.selectFrom('channels').selectAll().where('id', '=', ch.id).executeTakeFirstOrThrow();
    expect(row.inboundToken).toBe(token);
    expect(row.data).not.toContain('sb_api_key_0123456789');
    expect(t.ctx.secrets.decryptJson(row.data!)).toEqual(data);
    expect(ok(await call('GET', `/v1/channel/${ch.id}`))).toEqual(ch);

    // Without the optional signing secret; another channel gets another token.
    const { sendBlueSigningSecret: _unused, ...required } = data;
    const other = ok(await call('POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'imsg-2', type: 'imessage', data: required }));
    expect(other.data).toEqual({ sendBlueAPIKey: 'sb_a...6789', sendBlueSecretKey: 'sb_s...ijkl', fromNumber: '+15551234567' });
    expect(other.inboundUrl).not.toBe(ch.inboundUrl);
  });

  it('refuses bad input with a 400 and creates nothing', async () => {
    const before = ok(await call('GET', `/v1/channel/list?appId=${clawApp.id}`)).total;
    const data = { sendBlueAPIKey: 'k'.repeat(20), sendBlueSecretKey: 's'.repeat(20), fromNumber: '+15551234567' };
    const base = { appId: clawApp.id, slug: 'bad' };
    const cases: unknown[] = [
      { ...base, type: 'api', data }, // data is for imessage only
      { ...base, type: 'imessage', data, webhook: { url: PUBLIC_URL } }, // webhook is for api only
      { ...base, type: 'imessage' }, // imessage requires data
      { ...base, type: 'imessage', data: { ...data, fromNumber: undefined } },
      { ...base, type: 'imessage', data: { ...data, fromNumber: '5551234567' } },
      { ...base, type: 'imessage', data: { ...data, sendBlueAPIKey: '' } },
      { ...base, type: 'imessage', data: { ...data, extra: 'x' } },
      { ...base, type: 'sms' }, // unknown enum
      { appId: clawApp.id, type: 'api' }, // missing slug
      { slug: 'bad', type: 'api' }, // missing appId
      { ...base }, // missing type
      { ...base, slug: 'Bad_Slug', type: 'api' },
      { ...base, slug: 'a'.repeat(65), type: 'api' },
      { ...base, type: 'api', name: 123 },
      { ...base, type: 'api', name: '' },
      { ...base, type: 'api', returnIfExist: 'true' },
      { ...base, type: 'api', color: 'red' }, // undocumented property
      { ...base, type: 'api', webhook: { url: PUBLIC_URL, secret: 'mine' } },
      { ...base, type: 'api', webhook: { name: 'x' } }, // webhook needs url
      { ...base, type: 'api', webhook: { url: 'ftp://93.184.215.14/x' } },
      { ...base, type: 'api', webhook: { url: 'not a url' } },
      { ...base, type: 'api', webhook: { url: PUBLIC_URL, headers: { 'X-Num': 1 } } },
      { ...base, type: 'api', webhook: { url: PUBLIC_URL, headers: { 'X-Bad': 'a\r\nInjected: yes' } } },
      { ...base, type: 'api', webhook: { url: PUBLIC_URL, headers: { 'Bad Name': 'x' } } },
      { ...base, type: 'api', webhook: { url: PUBLIC_URL, headers: { Host: 'evil.example' } } },
      { ...base, type: 'api', webhook: { url: PUBLIC_URL, headers: { 'Harnesslayer-Signature': 'forged' } } },
      { ...base, type: 'api', webhook: { url: PUBLIC_URL, headers: { 'X-A': '1', 'x-a': '2' } } },
      { ...base, type: 'api', webhook: { url: PUBLIC_URL, headers: { 'X-A': '✓✓✓' } } },
      'not json',
      [],
    ];
    for (const body of cases) fails(await call('POST', '/v1/channel/create', body), 400);
    expect(ok(await call('GET', `/v1/channel/list?appId=${clawApp.id}`)).total).toBe(before);
  });

  it.each([
    'http://127.0.0.1/hook',
    'http://127.1/hook',
    'http://2130706433/hook',
    'http://0x7f.1/hook',
    'http://[::1]/hook',
    'http://[::ffff:127.0.0.1]/hook',
    'http://169.254.169.254/latest/meta-data',
    'http://10.0.0.1/hook',
    'http://192.168.1.10/hook',
    'http://100.64.0.1/hook',
    'http://localhost:8787/hook',
  ])('refuses a channel webhook at the private address %s', async (url) => {
    const res = await call('POST', '/v1/channel/create', { appId: clawApp.id, slug: 'private-hook', type: 'api', webhook: { url } });
    fails(res, 400);
    expect(res.body.error).toContain('not allowed');
    fails(await call('GET', `/v1/channel/private-hook?appId=${clawApp.id}`), 404);
  });

  it('answers a taken slug with 409 slug_taken, or the existing channel with returnIfExist', async () => {
    const first = ok(await call('POST', '/v1/channel/create', { appId: clawApp.id, slug: 'dup', type: 'api', webhook: { url: PUBLIC_URL } }));
    fails(await call('POST', '/v1/channel/create', { appId: clawApp.id, slug: 'dup', type: 'api' }), 409, 'slug_taken');
    const again = ok(await call('POST', '/v1/channel/create', { appId: clawApp.slug, slug: 'dup', type: 'api', returnIfExist: true }));
    expect(again.id).toBe(first.id);
    expect(again.webhook.secret).toBeUndefined(); // shown once, at creation only
    // Slugs are unique per app: the same slug in another app (or organization) is fine.
    ok(await call('POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'dup', type: 'api' }));
    ok(await call('POST', '/v1/channel/create', { appId: foreignApp.id, slug: 'dup', type: 'api' }, B.key));
  });

  it('lists an app’s channels newest first, paginated, with the true total', async () => {
    const app = await createApp(A.key, 'list-channels', 'claude');
    const ids: string[] = [];
    for (const slug of ['c1', 'c2', 'c3']) ids.push(ok(await call('POST', '/v1/channel/create', { appId: app.id, slug, type: 'api' })).id);
    const all = ok(await call('GET', `/v1/channel/list?appId=${app.slug}`));
    expect(all).toMatchObject({ page: 1, pageSize: 10, total: 3 });
    expect(all.items.map((c: any) => c.slug)).toEqual(['c3', 'c2', 'c1']);
    const second = ok(await call('GET', `/v1/channel/list?appId=${app.id}&page=2&pageSize=2`));
    expect(second).toMatchObject({ page: 2, pageSize: 2, total: 3 });
    expect(second.items.map((c: any) => c.id)).toEqual([ids[0]]);
    expect(ok(await call('GET', `/v1/channel/list?appId=${app.id}&page=9`))).toMatchObject({ items: [], total: 3 });
    fails(await call('GET', '/v1/channel/list'), 400);
    fails(await call('GET', `/v1/channel/list?appId=${app.id}&pageSize=101`), 400);
    fails(await call('GET', `/v1/channel/list?appId=${app.id}&page=0`), 400);
    fails(await call('GET', `/v1/channel/list?appId=${app.id}&color=red`), 400);
    fails(await call('GET', '/v1/channel/list?appId=app-doesnotexist'), 404, 'not_found');
    fails(await call('GET', `/v1/channel/list?appId=${foreignApp.id}`), 404, 'not_found');
  });

  it('finds a channel by slug only together with appId, and never another organization’s', async () => {
    const ch = ok(await call('POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'by-slug', type: 'api' }));
    expect(ok(await call('GET', `/v1/channel/by-slug?appId=${claudeApp.slug}`)).id).toBe(ch.id);
    fails(await call('GET', '/v1/channel/by-slug'), 404, 'not_found');
    fails(await call('GET', `/v1/channel/by-slug?appId=${clawApp.id}`), 404);
    fails(await call('GET', '/v1/channel/ch-doesnotexist'), 404, 'not_found');
    fails(await call('GET', `/v1/channel/${ch.id}`, undefined, B.key), 404, 'not_found');
    fails(await call('PATCH', `/v1/channel/${ch.id}`, { name: 'stolen' }, B.key), 404);
    fails(await call('DELETE', `/v1/channel/${ch.id}`, undefined, B.key), 404);
    expect(ok(await call('GET', `/v1/channel/${ch.id}`)).name).toBe('by-slug');
  });

  it('PATCH applies name and slug, {} changes nothing, a taken slug is 409', async () => {
    const ch = ok(await call('POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'patch-me', type: 'api', webhook: { url: PUBLIC_URL } }));
    expect(ok(await call('PATCH', `/v1/channel/${ch.id}`, {}))).toEqual({ ...ch, webhook: { ...ch.webhook, secret: undefined } });
    const renamed = ok(await call('PATCH', `/v1/channel/${ch.id}`, { name: 'Patched', slug: 'patched' }));
    expect(renamed).toMatchObject({ id: ch.id, name: 'Patched', slug: 'patched', type: 'api', webhook: { url: PUBLIC_URL } });
    expect(renamed.webhook.secret).toBeUndefined();
    expect(Date.parse(renamed.updatedAt)).toBeGreaterThanOrEqual(Date.parse(ch.updatedAt));
    expect(ok(await call('GET', `/v1/channel/${ch.id}`))).toEqual(renamed);
    expect(ok(await call('GET', `/v1/channel/patched?appId=${claudeApp.id}`)).id).toBe(ch.id);

    ok(await call('POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'occupied', type: 'api' }));
    fails(await call('PATCH', `/v1/channel/${ch.id}`, { slug: 'occupied' }), 409, 'slug_taken');
    fails(await call('PATCH', `/v1/channel/${ch.id}`, { slug: 'Not Valid' }), 400);
    fails(await call('PATCH', `/v1/channel/${ch.id}`, { name: '' }), 400);
    fails(await call('PATCH', `/v1/channel/${ch.id}`, { name: 5 }), 400);
    fails(await call('PATCH', `/v1/channel/${ch.id}`, { type: 'imessage' }), 400);
    fails(await call('PATCH', '/v1/channel/ch-doesnotexist', { name: 'x' }), 404);
    expect(ok(await call('GET', `/v1/channel/${ch.id}`))).toEqual(renamed);
  });

  it('DELETE answers {id, deleted: true}; the channel is gone', async () => {
    const ch = ok(await call('POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'delete-me', type: 'api' }));
    expect(ok(await call('DELETE', `/v1/channel/${ch.id}`))).toEqual({ id: ch.id, deleted: true });
    fails(await call('GET', `/v1/channel/${ch.id}`), 404);
    fails(await call('DELETE', `/v1/channel/${ch.id}`), 404);
    // The slug is free again.
    ok(await call('POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'delete-me', type: 'api' }));
  });
});

describe('sessions', () => {
  it('creates single sessions for claude apps and both kinds for openclaw apps', async () => {
    const s = ok(await call('POST', '/v1/session/create', { appId: claudeApp.slug, type: 'single' }));
    expect(s).toEqual({
      id: expect.stringMatching(/^sess-[A-Za-z0-9]+$/),
      appId: claudeApp.id,
      type: 'single',
      profileId: null,
      lastInstanceId: null,
      turns: 0,
      createdAt: expect.stringMatching(ISO),
      lastActiveAt: expect.stringMatching(ISO),
    });
    expect(ok(await call('GET', `/v1/session/${s.id}`))).toEqual(s);
    const claudeGroup = await call('POST', '/v1/session/create', { appId: claudeApp.id, type: 'group' });
    fails(claudeGroup, 400);
    expect(claudeGroup.body.error).toContain('single');
    expect(ok(await call('POST', '/v1/session/create', { appId: clawApp.id, type: 'group' })).type).toBe('group');
    expect(ok(await call('POST', '/v1/session/create', { appId: clawApp.id, type: 'single' })).type).toBe('single');
  });

  it('refuses bad input and unknown or foreign apps', async () => {
    const before = ok(await call('GET', `/v1/session/list?appId=${clawApp.id}`)).total;
    for (const body of [
      { appId: clawApp.id },
      { type: 'single' },
      { appId: clawApp.id, type: 'pair' },
      { appId: clawApp.id, type: 'SINGLE' },
      { appId: clawApp.id, type: 1 },
      { appId: clawApp.id, type: 'single', id: 'my-own-id' },
      { appId: 42, type: 'single' },
    ]) {
      fails(await call('POST', '/v1/session/create', body), 400);
    }
    fails(await call('POST', '/v1/session/create', { appId: 'app-doesnotexist', type: 'single' }), 404, 'not_found');
    fails(await call('POST', '/v1/session/create', { appId: foreignApp.id, type: 'single' }), 404, 'not_found');
    expect(ok(await call('GET', `/v1/session/list?appId=${clawApp.id}`)).total).toBe(before);
  });

  it('lists, gets and deletes; sessions named by callers are found verbatim, per organization', async () => {
    const app = await createApp(A.key, 'list-sessions', 'openclaw');
    const made = [];
    for (const type of ['single', 'group', 'single']) made.push(ok(await call('POST', '/v1/session/create', { appId: app.id, type })));
    const list = ok(await call('GET', `/v1/session/list?appId=${app.slug}&pageSize=2`));
    expect(list).toMatchObject({ page: 1, pageSize: 2, total: 3 });
    expect(list.items).toEqual([made[2], made[1]]);
    fails(await call('GET', '/v1/session/list'), 400);
    fails(await call('GET', `/v1/session/list?appId=${foreignApp.id}`), 404);

    // A run may name any session id: the same string can exist in two organizations.
    const named = 'my custom/session id';
    const now = new Date();
    for (const [org, appId] of [[A.id, app.id], [B.id, foreignApp.id]]) {
      await t.ctx.db
        .insertInto('sessions')
        .values({ id: named, organizationId: org, appId, type: 'single', profileId: null, lastInstanceId: null, turns: 2, createdAt: now, lastActiveAt: now })
        .execute();
    }
    const path = `/v1/session/${encodeURIComponent(named)}`;
    expect(ok(await call('GET', path))).toMatchObject({ id: named, appId: app.id, turns: 2 });
    expect(ok(await call('GET', path, undefined, B.key))).toMatchObject({ id: named, appId: foreignApp.id });
    expect(ok(await call('DELETE', path))).toEqual({ id: named, deleted: true });
    fails(await call('GET', path), 404);
    expect(ok(await call('GET', path, undefined, B.key)).id).toBe(named); // B's session untouched

    fails(await call('GET', `/v1/session/${made[0].id}`, undefined, B.key), 404, 'not_found');
    fails(await call('DELETE', `/v1/session/${made[0].id}`, undefined, B.key), 404);
    fails(await call('GET', `/v1/session/${'x'.repeat(129)}`), 400);
    expect(ok(await call('DELETE', `/v1/session/${made[0].id}`))).toEqual({ id: made[0].id, deleted: true });
    fails(await call('GET', `/v1/session/${made[0].id}`), 404);
    fails(await call('DELETE', `/v1/session/${made[0].id}`), 404);
  });
});

describe('webhooks', () => {
  const create = (body: object, key = A.key) => call('POST', '/v1/webhook/create', body, key);

  it('creates a webhook with defaults, its secret shown once, header values masked and encrypted', async () => {
    const wh = ok(await create({ appId: claudeApp.slug, event: 'profile.created', url: PUBLIC_URL, headers: { Authorization: 'Bearer your-webhook-secret' } }));
    expect(wh).toEqual({
      id: expect.stringMatching(/^wh-[A-Za-z0-9]+$/),
      appId: claudeApp.id,
      event: 'profile.created',
      method: 'POST',
      url: PUBLIC_URL,
      headers: { Authorization: 'Bear...cret' },
      secret: expect.stringMatching(/^whsec_[A-Za-z0-9]{32}$/),
      runCount: 0,
      lastTriggeredAt: null,
      createdAt: expect.stringMatching(ISO),
      updatedAt: expect.stringMatching(ISO),
    });
    const { secret, ...shown } = wh;
    expect(ok(await call('GET', `/v1/webhook/${wh.id}`))).toEqual(shown);
    const listed = ok(await call('GET', `/v1/webhook/list?appId=${claudeApp.id}&pageSize=100`));
    expect(listed.items.find((w: any) => w.id === wh.id)).toEqual(shown);
    const row = await t.ctx.db.selectFrom('webhooks').selectAll().where('id', '=', wh.id).executeTakeFirstOrThrow();
    expect(row.secret).not.toContain(secret);
    expect(t.ctx.secrets.decrypt(row.secret)).toBe(secret);
    expect(row.headers).not.toContain('your-webhook-secret');

    for (const method of ['GET', 'PUT', 'PATCH', 'DELETE', 'POST']) {
      const other = ok(await create({ appId: claudeApp.id, event: 'profile.created', method, url: PUBLIC_URL }));
      expect(other).toMatchObject({ method, headers: null });
      expect(other.secret).not.toBe(secret);
    }
  });

  it('refuses bad input, private URLs and foreign apps, creating nothing', async () => {
    const app = await createApp(A.key, 'hooks-bad', 'claude');
    const base = { appId: app.id, event: 'profile.created', url: PUBLIC_URL };
    for (const body of [
      { ...base, event: 'profile.deleted' },
      { ...base, method: 'HEAD' },
      { ...base, method: 'post' },
      { appId: app.id, event: 'profile.created' },
      { appId: app.id, url: PUBLIC_URL },
      { event: 'profile.created', url: PUBLIC_URL },
      { ...base, url: '' },
      { ...base, url: 'ftp://93.184.215.14/x' },
      { ...base, url: 'http://127.0.0.1:9/hook' },
      { ...base, url: 'http://2130706433/hook' },
      { ...base, url: 'http://[::ffff:10.0.0.1]/hook' },
      { ...base, url: 'http://localhost/hook' },
      { ...base, headers: { 'X-Count': 1 } },
      { ...base, headers: ['Authorization: x'] },
      { ...base, headers: { 'Content-Length': '5' } },
      { ...base, headers: { 'X-A': 'é✓' } }, // HTTP cannot carry it: nothing would ever be delivered
      { ...base, runCount: 3 },
      { ...base, secret: 'whsec_mine' },
    ]) {
      fails(await create(body), 400);
    }
    fails(await create({ ...base, appId: 'app-doesnotexist' }), 404, 'not_found');
    fails(await create({ ...base, appId: foreignApp.id }), 404, 'not_found');
    expect(ok(await call('GET', `/v1/webhook/list?appId=${app.id}`)).total).toBe(0);
  });

  it('updates by webhookId or its alias id, with nullable headers and lastTriggeredAt', async () => {
    const wh = ok(await create({ appId: clawApp.id, event: 'profile.created', url: PUBLIC_URL, headers: { 'X-Token': 'token-0123456789' } }));
    const update = (body: object, key = A.key) => call('POST', '/v1/webhook/update', body, key);

    const same = ok(await update({ webhookId: wh.id }));
    expect(same).toEqual({ ...wh, secret: undefined });
    expect(same.secret).toBeUndefined();

    const moved = ok(await update({ id: wh.id, method: 'PUT', url: 'https://93.184.215.15/new', headers: { 'X-Other': 'other-value-123456' } }));
    expect(moved).toMatchObject({ id: wh.id, method: 'PUT', url: 'https://93.184.215.15/new', headers: { 'X-Other': 'othe...3456' } });
    expect(ok(await update({ webhookId: wh.id, id: wh.id, event: 'profile.created' })).method).toBe('PUT');

    const triggered = ok(await update({ webhookId: wh.id, lastTriggeredAt: '2025-03-04T05:06:07+02:00', runCount: 7 }));
    expect(triggered).toMatchObject({ lastTriggeredAt: '2025-03-04T03:06:07.000Z', runCount: 7 });
    const cleared = ok(await update({ webhookId: wh.id, headers: null, lastTriggeredAt: null, runCount: 0 }));
    expect(cleared).toMatchObject({ headers: null, lastTriggeredAt: null, runCount: 0 });
    ok(await update({ webhookId: wh.id, runCount: 2_147_483_647 }));
    expect(ok(await call('GET', `/v1/webhook/${wh.id}`))).toMatchObject({ method: 'PUT', headers: null, runCount: 2_147_483_647 });

    const before = ok(await call('GET', `/v1/webhook/${wh.id}`));
    for (const body of [
      {},
      { url: PUBLIC_URL },
      { webhookId: wh.id, id: 'wh-somethingelse' },
      { webhookId: wh.id, runCount: -1 },
      { webhookId: wh.id, runCount: 2_147_483_648 },
      { webhookId: wh.id, runCount: '3' },
      { webhookId: wh.id, runCount: 1.5 },
      { webhookId: wh.id, lastTriggeredAt: 'yesterday' },
      { webhookId: wh.id, lastTriggeredAt: 1700000000 },
      { webhookId: wh.id, lastTriggeredAt: '0000-01-01T00:00:00Z' }, // no year 0 in the database
      { webhookId: wh.id, lastTriggeredAt: '9999-12-31T23:59:59-23:59' }, // the year 10000 in UTC
      { webhookId: wh.id, method: 'TRACE' },
      { webhookId: wh.id, event: 'profile.updated' },
      { webhookId: wh.id, url: 'http://192.168.0.1/hook' },
      { webhookId: wh.id, url: 'http://0x7f.1/hook' },
      { webhookId: wh.id, headers: { Host: 'x' } },
      { webhookId: wh.id, secret: 'whsec_x' },
      { webhookId: wh.id, appId: claudeApp.id },
    ]) {
      fails(await update(body), 400);
    }
    fails(await update({ webhookId: 'wh-doesnotexist' }), 404, 'not_found');
    fails(await update({ id: wh.id, runCount: 1 }, B.key), 404, 'not_found');
    expect(ok(await call('GET', `/v1/webhook/${wh.id}`))).toEqual(before);
  });

  it('lists newest first, gets and deletes; other organizations see 404', async () => {
    const app = await createApp(A.key, 'hooks-list', 'claude');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(ok(await create({ appId: app.id, event: 'profile.created', url: PUBLIC_URL })).id);
    const list = ok(await call('GET', `/v1/webhook/list?appId=${app.slug}&pageSize=2&page=2`));
    expect(list).toMatchObject({ page: 2, pageSize: 2, total: 3 });
    expect(list.items.map((w: any) => w.id)).toEqual([ids[0]]);
    fails(await call('GET', '/v1/webhook/list'), 400);
    fails(await call('GET', `/v1/webhook/list?appId=${app.id}`, undefined, B.key), 404);

    fails(await call('GET', `/v1/webhook/${ids[1]}`, undefined, B.key), 404, 'not_found');
    fails(await call('DELETE', `/v1/webhook/${ids[1]}`, undefined, B.key), 404);
    fails(await call('GET', '/v1/webhook/wh-doesnotexist'), 404);
    expect(ok(await call('DELETE', `/v1/webhook/${ids[1]}`))).toEqual({ id: ids[1], deleted: true });
    fails(await call('GET', `/v1/webhook/${ids[1]}`), 404);
    fails(await call('DELETE', `/v1/webhook/${ids[1]}`), 404);
    expect(ok(await call('GET', `/v1/webhook/list?appId=${app.id}`)).total).toBe(2);
  });
});

describe('keys and app deletion', () => {
  it('answers a user key with 403 and a missing key with 401 on every endpoint', async () => {
    const endpoints: [string, string, unknown?][] = [
      ['POST', '/v1/channel/create', { appId: claudeApp.id, slug: 'k', type: 'api' }],
      ['GET', `/v1/channel/list?appId=${claudeApp.id}`],
      ['GET', '/v1/channel/ch-x'],
      ['PATCH', '/v1/channel/ch-x', {}],
      ['DELETE', '/v1/channel/ch-x'],
      ['POST', '/v1/session/create', { appId: claudeApp.id, type: 'single' }],
      ['GET', `/v1/session/list?appId=${claudeApp.id}`],
      ['GET', '/v1/session/sess-x'],
      ['DELETE', '/v1/session/sess-x'],
      ['POST', '/v1/webhook/create', { appId: claudeApp.id, event: 'profile.created', url: PUBLIC_URL }],
      ['POST', '/v1/webhook/update', { webhookId: 'wh-x' }],
      ['GET', `/v1/webhook/list?appId=${claudeApp.id}`],
      ['GET', '/v1/webhook/wh-x'],
      ['DELETE', '/v1/webhook/wh-x'],
    ];
    for (const [method, path, body] of endpoints) {
      fails(await t.call(method, path, { key: t.userKey, body }), 403, 'forbidden');
      fails(await t.call(method, path, { key: '', body }), 401, 'unauthorized');
    }
  });

  it('hides the channels, sessions and webhooks of an app being deleted', async () => {
    const app = await createApp(A.key, 'doomed', 'claude');
    const ch = ok(await call('POST', '/v1/channel/create', { appId: app.id, slug: 'c', type: 'api' }));
    const s = ok(await call('POST', '/v1/session/create', { appId: app.id, type: 'single' }));
    const wh = ok(await create());
    async function create() {
      return call('POST', '/v1/webhook/create', { appId: app.id, event: 'profile.created', url: PUBLIC_URL });
    }
    await t.ctx.db.updateTable('apps').set({ status: 'deleting' }).where('id', '=', app.id).execute();
    fails(await call('GET', `/v1/channel/${ch.id}`), 404);
    fails(await call('GET', `/v1/session/${s.id}`), 404);
    fails(await call('GET', `/v1/webhook/${wh.id}`), 404);
    fails(await call('POST', '/v1/webhook/update', { webhookId: wh.id, runCount: 1 }), 404);
  });
});
