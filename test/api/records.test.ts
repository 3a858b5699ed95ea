import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type ApiReply, type TestServer } from '../helpers/server.js';

// Instances, syncs, conflicts and history are written by runs and sync jobs; here the rows
// are inserted directly so the read endpoints can be checked field by field.

let t: TestServer;
let A: { key: string; id: string };
let B: { key: string; id: string };
let app: { id: string; slug: string }; // A's app with the records
let sibling: { id: string; slug: string }; // another app of A
let foreign: { id: string; slug: string }; // B's app
let alice: string; // profiles of `app`
let bob: string;
let siblingProfile: string;
let foreignProfile: string;

const T0 = Date.parse('2025-01-01T00:00:00.000Z');
const at = (s: number) => new Date(T0 + s * 1000);

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

const get = (path: string, key = A.key) => t.call('GET', path, { key });
const ids = (page: { items: { id: string }[] }) => page.items.map((i) => i.id);

async function createApp(key: string, slug: string) {
  return { id: ok(await t.call('POST', '/v1/app/create', { key, body: { slug, type: 'openclaw' } })).id as string, slug };
}
async function createProfile(key: string, appId: string, identifier: string): Promise<string> {
  return ok(await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier } })).id;
}

beforeAll(async () => {
  t = await startTestServer();
  A = await t.org();
  B = await t.org();
  app = await createApp(A.key, 'records');
  sibling = await createApp(A.key, 'sibling');
  foreign = await createApp(B.key, 'records');
  alice = await createProfile(A.key, app.id, 'alice@example.com');
  bob = await createProfile(A.key, app.id, 'bob@example.com');
  siblingProfile = await createProfile(A.key, sibling.id, 'alice@example.com');
  foreignProfile = await createProfile(B.key, foreign.id, 'alice@example.com');

  const db = t.ctx.db;
  const base = { organizationId: A.id, appId: app.id };
  await db
    .insertInto('instances')
    .values([
      {
        ...base, id: 'inst-done', channelId: 'ch-1', sessionId: 'sess-1', profileId: alice, userId: 'alice@example.com',
        status: 'completed', input: 'Hello', output: 'Hi there', error: null, inputTokens: 12, outputTokens: 34, costUsd: 0.0125,
        stateId: 'state-9', createdAt: at(1), startedAt: at(2), completedAt: at(3),
      },
      {
        ...base, id: 'inst-queued', channelId: 'ch-1', sessionId: 'sess-2', profileId: bob, userId: 'bob@example.com',
        status: 'queued', input: 'Later', output: null, error: null, stateId: null, createdAt: at(5), startedAt: null, completedAt: null,
      },
      {
        ...base, id: 'inst-failed', channelId: 'ch-1', sessionId: 'sess-1', profileId: alice, userId: 'alice@example.com',
        status: 'failed', input: 'Boom', output: null, error: 'model unavailable', stateId: null, createdAt: at(4), startedAt: at(4), completedAt: at(5),
      },
      {
        organizationId: B.id, appId: foreign.id, id: 'inst-foreign', channelId: null, sessionId: null, profileId: foreignProfile,
        userId: 'alice@example.com', status: 'completed', input: 'x', output: 'y', error: null, stateId: null, createdAt: at(9), startedAt: null, completedAt: null,
      },
    ])
    .execute();
  await db
    .insertInto('syncs')
    .values([
      {
        ...base, id: 'sync-1', versionId: 'ver-1', strategy: 'smart', status: 'completed', total: 2, processed: 2, updated: 1,
        unchanged: 1, conflicted: 1, failed: 0, createdAt: at(10), startedAt: at(11), completedAt: at(12),
      },
      { ...base, id: 'sync-2', versionId: 'ver-2', strategy: 'manual', status: 'queued', createdAt: at(20), startedAt: null, completedAt: null },
      { organizationId: A.id, appId: sibling.id, id: 'sync-sibling', versionId: 'ver-s', strategy: 'smart', status: 'queued', startedAt: null, completedAt: null },
      { organizationId: B.id, appId: foreign.id, id: 'sync-foreign', versionId: 'ver-f', strategy: 'smart', status: 'queued', startedAt: null, completedAt: null },
    ])
    .execute();
  const conflict = (id: string, profileId: string, syncId: string, status: string, s: number) => ({
    ...base, id, profileId, syncId, path: `${id}.md`, kind: 'content', strategy: syncId === 'sync-1' ? 'smart' : 'manual', status,
    resolution: status === 'open' ? null : 'current', baseHash: 'sha256-' + 'a'.repeat(64), currentHash: 'sha256-' + 'b'.repeat(64),
    incomingHash: 'sha256-' + 'c'.repeat(64), resultHash: status === 'open' ? null : 'sha256-' + 'b'.repeat(64), createdAt: at(s),
  });
  await db
    .insertInto('conflicts')
    .values([
      conflict('conf-a1', alice, 'sync-1', 'resolved', 30),
      conflict('conf-a2', alice, 'sync-2', 'open', 31),
      conflict('conf-b2', bob, 'sync-2', 'open', 32),
      conflict('conf-a2b', alice, 'sync-2', 'resolved', 33),
      { ...conflict('conf-foreign', foreignProfile, 'sync-foreign', 'open', 34), organizationId: B.id, appId: foreign.id },
    ])
    .execute();
  const history = (id: string, profileId: string, userId: string, sessionId: string, s: number, appId = app.id, organizationId = A.id) => ({
    id, organizationId, appId, instanceId: `inst-${id}`, channelId: 'ch-1', sessionId, profileId, userId, status: 'completed',
    input: `in ${id}`, output: `out ${id}`, inputTokens: s, outputTokens: 2 * s, costUsd: s / 100, createdAt: at(s),
  });
  await db
    .insertInto('history')
    .values([
      history('hist-1', alice, 'alice@example.com', 'sess-1', 40),
      history('hist-2', alice, 'alice@example.com', 'sess-1', 41),
      history('hist-3', bob, 'bob@example.com', 'sess-2', 42),
      history('hist-4', alice, 'alice@example.com', 'sess-3', 43),
      history('hist-sib', siblingProfile, 'alice@example.com', 'sess-1', 44, sibling.id),
      history('hist-foreign', foreignProfile, 'alice@example.com', 'sess-1', 45, foreign.id, B.id),
    ])
    .execute();
});
afterAll(async () => t?.close());

describe('instances', () => {
  it('returns one instance with every documented field', async () => {
    expect(ok(await get('/v1/instance/inst-done'))).toEqual({
      id: 'inst-done',
      appId: app.id,
      channelId: 'ch-1',
      sessionId: 'sess-1',
      profileId: alice,
      userId: 'alice@example.com',
      status: 'completed',
      input: 'Hello',
      output: 'Hi there',
      error: null,
      usage: { inputTokens: 12, outputTokens: 34, costUsd: 0.0125 },
      stateId: 'state-9',
      createdAt: '2025-01-01T00:00:01.000Z',
      startedAt: '2025-01-01T00:00:02.000Z',
      completedAt: '2025-01-01T00:00:03.000Z',
    });
    expect(ok(await get('/v1/instance/inst-queued'))).toMatchObject({
      status: 'queued',
      output: null,
      usage: { inputTokens: 0, outputTokens: 0, costUsd: 0 },
      startedAt: null,
      completedAt: null,
    });
    expect(ok(await get('/v1/instance/inst-failed'))).toMatchObject({ status: 'failed', error: 'model unavailable' });
  });

  it('lists an app’s instances newest first, paginated', async () => {
    const all = ok(await get(`/v1/instance/list?appId=${app.slug}`));
    expect(all).toMatchObject({ page: 1, pageSize: 10, total: 3 });
    expect(ids(all)).toEqual(['inst-queued', 'inst-failed', 'inst-done']);
    expect(ok(await get(`/v1/instance/list?appId=${app.id}&page=2&pageSize=2`))).toMatchObject({ items: [{ id: 'inst-done' }], total: 3 });
    expect(ok(await get(`/v1/instance/list?appId=${app.id}&page=3&pageSize=2`))).toMatchObject({ items: [], total: 3 });
    expect(ok(await get(`/v1/instance/list?appId=${sibling.id}`))).toMatchObject({ items: [], total: 0 });
  });

  it('refuses unknown, foreign and malformed requests', async () => {
    fails(await get('/v1/instance/inst-nope'), 404, 'not_found');
    fails(await get('/v1/instance/inst-foreign'), 404, 'not_found');
    fails(await get('/v1/instance/inst-done', B.key), 404, 'not_found');
    fails(await get('/v1/instance/list'), 400);
    fails(await get(`/v1/instance/list?appId=${foreign.id}`), 404, 'not_found');
    fails(await get('/v1/instance/list?appId=app-nope'), 404);
    fails(await get(`/v1/instance/list?appId=${app.id}&pageSize=0`), 400);
    fails(await get(`/v1/instance/list?appId=${app.id}&page=abc`), 400);
    fails(await get(`/v1/instance/list?appId=${app.id}&status=queued`), 400);
  });
});

describe('syncs', () => {
  it('returns one sync job with every documented field, and lists them newest first', async () => {
    expect(ok(await get('/v1/sync/sync-1'))).toEqual({
      id: 'sync-1',
      appId: app.id,
      versionId: 'ver-1',
      strategy: 'smart',
      status: 'completed',
      total: 2,
      processed: 2,
      updated: 1,
      unchanged: 1,
      conflicted: 1,
      failed: 0,
      createdAt: '2025-01-01T00:00:10.000Z',
      startedAt: '2025-01-01T00:00:11.000Z',
      completedAt: '2025-01-01T00:00:12.000Z',
    });
    expect(ok(await get('/v1/sync/sync-2'))).toMatchObject({ status: 'queued', total: 0, processed: 0, startedAt: null, completedAt: null });
    const list = ok(await get(`/v1/sync/list?appId=${app.slug}`));
    expect(list).toMatchObject({ total: 2, page: 1, pageSize: 10 });
    expect(ids(list)).toEqual(['sync-2', 'sync-1']);
  });

  it('refuses unknown, foreign and malformed requests', async () => {
    fails(await get('/v1/sync/sync-nope'), 404, 'not_found');
    fails(await get('/v1/sync/sync-foreign'), 404);
    fails(await get('/v1/sync/sync-1', B.key), 404);
    fails(await get('/v1/sync/list'), 400);
    fails(await get(`/v1/sync/list?appId=${foreign.id}`), 404, 'not_found');
    fails(await get('/v1/sync/list?appId=app-nope'), 404);
    fails(await get(`/v1/sync/list?appId=${app.id}&pageSize=101`), 400);
    // The same slug in two organizations: each key sees its own app.
    expect(ids(ok(await get(`/v1/sync/list?appId=${foreign.slug}`, B.key)))).toEqual(['sync-foreign']);
  });
});

describe('conflicts', () => {
  it('returns one conflict with every documented field', async () => {
    expect(ok(await get('/v1/conflict/conf-a2'))).toEqual({
      id: 'conf-a2',
      appId: app.id,
      profileId: alice,
      syncId: 'sync-2',
      path: 'conf-a2.md',
      kind: 'content',
      strategy: 'manual',
      status: 'open',
      resolution: null,
      baseHash: 'sha256-' + 'a'.repeat(64),
      currentHash: 'sha256-' + 'b'.repeat(64),
      incomingHash: 'sha256-' + 'c'.repeat(64),
      resultHash: null,
      createdAt: '2025-01-01T00:00:31.000Z',
    });
    expect(ok(await get('/v1/conflict/conf-a1'))).toMatchObject({ status: 'resolved', resolution: 'current', resultHash: 'sha256-' + 'b'.repeat(64) });
  });

  it('lists an app’s conflicts with profileId, syncId and status filters combined by AND', async () => {
    const list = (q: string) => get(`/v1/conflict/list?appId=${app.id}${q}`);
    expect(ids(ok(await list('')))).toEqual(['conf-a2b', 'conf-b2', 'conf-a2', 'conf-a1']);
    expect(ids(ok(await list(`&profileId=${alice}`)))).toEqual(['conf-a2b', 'conf-a2', 'conf-a1']);
    // With the app named, a profile may be named by its identifier.
    expect(ids(ok(await list('&profileId=bob%40example.com')))).toEqual(['conf-b2']);
    expect(ids(ok(await list('&syncId=sync-2')))).toEqual(['conf-a2b', 'conf-b2', 'conf-a2']);
    expect(ids(ok(await list('&status=open')))).toEqual(['conf-b2', 'conf-a2']);
    expect(ids(ok(await list('&status=resolved')))).toEqual(['conf-a2b', 'conf-a1']);
    expect(ids(ok(await list(`&profileId=${alice}&syncId=sync-2&status=open`)))).toEqual(['conf-a2']);
    expect(ok(await list(`&profileId=${bob}&syncId=sync-1`))).toMatchObject({ items: [], total: 0 });
    expect(ok(await list('&syncId=sync-2&pageSize=1&page=2'))).toMatchObject({ items: [{ id: 'conf-b2' }], total: 3 });
    expect(ids(ok(await get(`/v1/conflict/list?appId=${app.slug}&status=open`)))).toEqual(['conf-b2', 'conf-a2']);
  });

  it('answers 404 for filters naming another app’s or organization’s records, 400 for bad ones', async () => {
    const list = (q: string, key = A.key) => get(`/v1/conflict/list?appId=${app.id}${q}`, key);
    fails(await list(`&profileId=${siblingProfile}`), 404, 'not_found');
    fails(await list(`&profileId=${foreignProfile}`), 404);
    fails(await list('&profileId=prof-nope'), 404);
    fails(await list('&syncId=sync-sibling'), 404, 'not_found');
    fails(await list('&syncId=sync-foreign'), 404);
    fails(await list('&syncId=sync-nope'), 404);
    fails(await list('&status=pending'), 400);
    fails(await list('&kind=content'), 400);
    fails(await list('', B.key), 404);
    fails(await get('/v1/conflict/list'), 400);
    fails(await get(`/v1/conflict/list?status=open`), 400);
    fails(await get('/v1/conflict/conf-nope'), 404, 'not_found');
    fails(await get('/v1/conflict/conf-foreign'), 404);
    fails(await get('/v1/conflict/conf-a1', B.key), 404);
  });

  it('leaves out the conflicts of a profile being deleted, as the profile lists do', async () => {
    await t.ctx.db.updateTable('profiles').set({ status: 'deleting' }).where('id', '=', bob).execute();
    try {
      expect(ids(ok(await get(`/v1/conflict/list?appId=${app.id}`)))).toEqual(['conf-a2b', 'conf-a2', 'conf-a1']);
      fails(await get('/v1/conflict/conf-b2'), 404, 'not_found');
    } finally {
      await t.ctx.db.updateTable('profiles').set({ status: 'active' }).where('id', '=', bob).execute();
    }
    expect(ok(await get('/v1/conflict/conf-b2'))).toMatchObject({ id: 'conf-b2' });
  });
});

describe('history', () => {
  it('returns one history record with every documented field', async () => {
    expect(ok(await get('/v1/history/hist-3'))).toEqual({
      id: 'hist-3',
      appId: app.id,
      instanceId: 'inst-hist-3',
      channelId: 'ch-1',
      sessionId: 'sess-2',
      profileId: bob,
      userId: 'bob@example.com',
      status: 'completed',
      input: 'in hist-3',
      output: 'out hist-3',
      usage: { inputTokens: 42, outputTokens: 84, costUsd: 0.42 },
      createdAt: '2025-01-01T00:00:42.000Z',
    });
    fails(await get('/v1/history/hist-nope'), 404, 'not_found');
    fails(await get('/v1/history/hist-foreign'), 404);
    fails(await get('/v1/history/hist-3', B.key), 404);
  });

  it('filters by appId, profileId, sessionId, userId and historyId, combined by AND', async () => {
    const list = async (q: string) => ids(ok(await get(`/v1/history/list?${q}`)));
    expect(await list(`appId=${app.id}`)).toEqual(['hist-4', 'hist-3', 'hist-2', 'hist-1']);
    expect(await list(`appId=${app.slug}`)).toEqual(['hist-4', 'hist-3', 'hist-2', 'hist-1']);
    expect(await list(`profileId=${alice}`)).toEqual(['hist-4', 'hist-2', 'hist-1']);
    expect(await list(`appId=${app.slug}&profileId=alice%40example.com`)).toEqual(['hist-4', 'hist-2', 'hist-1']);
    // Across the organization's apps, never another organization's records.
    expect(await list('sessionId=sess-1')).toEqual(['hist-sib', 'hist-2', 'hist-1']);
    expect(await list('userId=alice%40example.com')).toEqual(['hist-sib', 'hist-4', 'hist-2', 'hist-1']);
    expect(await list('historyId=hist-2')).toEqual(['hist-2']);
    expect(await list('historyId=hist-foreign')).toEqual([]);
    expect(await list(`appId=${app.id}&sessionId=sess-1`)).toEqual(['hist-2', 'hist-1']);
    expect(await list(`profileId=${alice}&sessionId=sess-3`)).toEqual(['hist-4']);
    expect(await list(`userId=bob%40example.com&sessionId=sess-1`)).toEqual([]);
    expect(await list(`appId=${app.id}&historyId=hist-sib`)).toEqual([]);
    expect(await list('sessionId=unknown-session')).toEqual([]);
    expect(ok(await get(`/v1/history/list?appId=${app.id}&pageSize=3&page=2`))).toMatchObject({ items: [{ id: 'hist-1' }], page: 2, pageSize: 3, total: 4 });
    expect(ids(ok(await get('/v1/history/list?sessionId=sess-1', B.key)))).toEqual(['hist-foreign']);
  });

  it('requires a filter (400) and answers 404 for unknown or foreign apps and profiles', async () => {
    const res = await get('/v1/history/list');
    fails(res, 400);
    expect(res.body.error).toContain('at least one filter');
    fails(await get('/v1/history/list?page=1&pageSize=10'), 400);
    fails(await get('/v1/history/list?appId=app-nope'), 404, 'not_found');
    fails(await get(`/v1/history/list?appId=${foreign.id}`), 404);
    fails(await get('/v1/history/list?profileId=prof-nope'), 404);
    fails(await get(`/v1/history/list?profileId=${foreignProfile}`), 404);
    fails(await get(`/v1/history/list?appId=${app.id}&profileId=${siblingProfile}`), 404);
    // Without appId a profile is named by display id only.
    fails(await get('/v1/history/list?profileId=alice%40example.com'), 404);
    fails(await get(`/v1/history/list?appId=${app.id}&instanceId=inst-1`), 400);
    fails(await get(`/v1/history/list?sessionId=${'s'.repeat(129)}`), 400);
  });
});

describe('keys and app deletion', () => {
  it('answers a user key with 403 and no key with 401', async () => {
    for (const path of [
      '/v1/instance/inst-done',
      `/v1/instance/list?appId=${app.id}`,
      '/v1/sync/sync-1',
      `/v1/sync/list?appId=${app.id}`,
      '/v1/conflict/conf-a1',
      `/v1/conflict/list?appId=${app.id}`,
      '/v1/history/hist-1',
      `/v1/history/list?appId=${app.id}`,
    ]) {
      fails(await t.call('GET', path, { key: t.userKey }), 403, 'forbidden');
      fails(await t.call('GET', path, { key: '' }), 401, 'unauthorized');
    }
  });

  it('hides the records of an app being deleted', async () => {
    await t.ctx.db.updateTable('apps').set({ status: 'deleting' }).where('id', '=', sibling.id).execute();
    fails(await get('/v1/sync/sync-sibling'), 404);
    fails(await get('/v1/history/hist-sib'), 404);
    fails(await get(`/v1/history/list?appId=${sibling.id}`), 404);
    expect(ids(ok(await get('/v1/history/list?sessionId=sess-1')))).toEqual(['hist-2', 'hist-1']);
  });
});
