import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { start, type Running } from '../../src/start.js';
import { deploy } from '../files/bundle.js';
import { TEST_DB_KIND } from '../helpers/databases.js';
import { eventually, startTestServer, type ApiReply, type TestServer } from '../helpers/server.js';

/*
 * GET /v1/app/{id} answers from an in-process cache (src/core/app-cache.ts). Every GET below
 * follows one that filled the cache, so a missed invalidation shows as a stale reply.
 */

let t: TestServer;
let key: string;
let slugs = 0;

beforeAll(async () => {
  t = await startTestServer({ listen: true });
  key = (await t.org()).key;
});
afterAll(async () => t?.close());

const get = (ref: string, k = key) => t.call('GET', `/v1/app/${ref}`, { key: k });

async function newApp(k = key): Promise<{ id: string; slug: string }> {
  const res = await t.call('POST', '/v1/app/create', { key: k, body: { slug: `cached-${++slugs}`, type: 'claude' } });
  expect(res.status).toBe(200);
  return res.body.data;
}

/** GETs twice by id and by slug: the second of each is a cache hit. */
async function warm(app: { id: string; slug: string }, k = key): Promise<void> {
  for (const ref of [app.id, app.id, app.slug, app.slug]) expect((await get(ref, k)).status).toBe(200);
}

describe('in one process, a write is seen by the next GET', () => {
  it('update: new name and slug at once; the old slug is gone', async () => {
    const app = await newApp();
    await warm(app);
    const newSlug = `renamed-${slugs}`;
    expect((await t.call('PATCH', `/v1/app/${app.id}`, { key, body: { name: 'Renamed', slug: newSlug } })).status).toBe(200);
    expect((await get(app.id)).body.data).toMatchObject({ name: 'Renamed', slug: newSlug });
    expect((await get(newSlug)).body.data).toMatchObject({ id: app.id, name: 'Renamed' });
    expect((await get(app.slug)).status).toBe(404);
  });

  it('version create and rollback move headVersionId at once', async () => {
    const app = await newApp();
    await warm(app);
    const v1 = await deploy(t, key, app.id, { 'CLAUDE.md': 'one\n' });
    expect((await get(app.id)).body.data.headVersionId).toBe(v1.id);
    expect((await get(app.slug)).body.data.headVersionId).toBe(v1.id);
    const v2 = await deploy(t, key, app.id, { 'CLAUDE.md': 'two\n' });
    expect((await get(app.id)).body.data.headVersionId).toBe(v2.id);
    expect((await t.call('POST', '/v1/version/rollback', { key, body: { appId: app.id, toVersionId: v1.id } })).status).toBe(200);
    expect((await get(app.id)).body.data.headVersionId).toBe(v1.id);
    expect((await get(app.slug)).body.data.headVersionId).toBe(v1.id);
  });

  it('delete: deleting at once, then 404 once the job has run', async () => {
    const app = await newApp();
    await warm(app);
    expect((await t.call('DELETE', `/v1/app/${app.id}`, { key })).status).toBe(200);
    expect((await get(app.id)).body.data).toMatchObject({ id: app.id, status: 'deleting' });
    expect((await get(app.slug)).body.data).toMatchObject({ id: app.id, status: 'deleting' });
    await eventually(async () => (await get(app.id)).status === 404, 'the deletion job');
    expect((await get(app.slug)).status).toBe(404);
  });

  it("a new app that takes a deleting app's slug is found by that slug at once", async () => {
    const old = await newApp();
    expect((await t.call('DELETE', `/v1/app/${old.id}`, { key })).status).toBe(200);
    // Fill the cache with the deleting app under its slug (the job may remove it meanwhile).
    await get(old.slug);
    await get(old.slug);
    const fresh = await t.call('POST', '/v1/app/create', { key, body: { slug: old.slug, type: 'claude' } });
    expect(fresh.status).toBe(200);
    expect((await get(old.slug)).body.data).toMatchObject({ id: fresh.body.data.id, status: 'active' });
  });
});

describe('tenancy', () => {
  it("another organization's key gets 404 for a cached id or slug, and its own app for the same slug", async () => {
    const mine = await newApp();
    await warm(mine);
    const other = await t.org();
    expect(await errorOf(get(mine.id, other.key))).toEqual({ status: 404, code: 'not_found' });
    expect(await errorOf(get(mine.slug, other.key))).toEqual({ status: 404, code: 'not_found' });
    const theirs = await t.call('POST', '/v1/app/create', { key: other.key, body: { slug: mine.slug, type: 'openclaw' } });
    expect(theirs.status).toBe(200);
    expect((await get(mine.slug, other.key)).body.data).toMatchObject({ id: theirs.body.data.id, type: 'openclaw' });
    expect((await get(mine.slug)).body.data).toMatchObject({ id: mine.id, type: 'claude' });
  });
});

async function errorOf(reply: Promise<ApiReply>): Promise<{ status: number; code?: string }> {
  const r = await reply;
  return { status: r.status, code: r.body.code };
}

describe.runIf(TEST_DB_KIND === 'postgres')('across API processes on PostgreSQL', () => {
  let second: Running;
  // A second API process on the same database: its own pool, LISTEN connection and cache.
  const getThere = async (ref: string) => {
    const res = await second.server!.inject({ method: 'GET', url: `/v1/app/${ref}`, headers: { authorization: `Bearer ${key}` } });
    return { status: res.statusCode, body: res.json() };
  };
  beforeAll(async () => {
    second = await start({ ...t.config, port: 0 }, 'api', { listen: false });
  });
  afterAll(async () => second?.stop());

  it('an update, a version and a delete made through one server reach the other', async () => {
    const app = await newApp();
    for (const ref of [app.id, app.id, app.slug]) expect((await getThere(ref)).status).toBe(200);

    expect((await t.call('PATCH', `/v1/app/${app.id}`, { key, body: { name: 'Elsewhere' } })).status).toBe(200);
    await eventually(async () => (await getThere(app.id)).body.data.name === 'Elsewhere', 'the rename on the second server');
    expect((await getThere(app.slug)).body.data.name).toBe('Elsewhere');

    const v1 = await deploy(t, key, app.id, { 'CLAUDE.md': 'one\n' });
    await eventually(async () => (await getThere(app.id)).body.data.headVersionId === v1.id, 'the new head on the second server');

    expect((await t.call('DELETE', `/v1/app/${app.id}`, { key })).status).toBe(200);
    await eventually(async () => (await getThere(app.id)).status === 404, 'the deletion on the second server');
  });
});
