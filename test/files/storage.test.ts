import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalBlobStore } from '../../src/storage/blobs/local.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { commit, deploy, download, hex, type Bundle } from './bundle.js';

// Storage cost and garbage collection: profiles share their base version's content, and
// deleting apps and profiles removes exactly the content nothing else uses.

let t: TestServer;
let key: string;

beforeAll(async () => {
  t = await startTestServer({ listen: true });
  key = (await t.org()).key;
});
afterAll(async () => t?.close());

/** Stored contents, in files of their own or in packs (staging and temp excluded). */
async function storedBlobs(): Promise<Map<string, number>> {
  return (t.ctx.blobs as LocalBlobStore).list();
}

/** Files in the store's pack directory (bytes and indexes). */
async function packFiles(): Promise<string[]> {
  return fs.readdir(path.join(t.config.storage.slice('file:'.length), 'packs'));
}

async function counts() {
  const n = async (table: 'blobs' | 'trees' | 'treeEntries' | 'overlays' | 'overlayEntries' | 'states' | 'versions') =>
    Number((await t.ctx.db.selectFrom(table).select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow()).n);
  const disk = await storedBlobs();
  return {
    blobs: await n('blobs'),
    trees: await n('trees'),
    treeEntries: await n('treeEntries'),
    overlays: await n('overlays'),
    overlayEntries: await n('overlayEntries'),
    states: await n('states'),
    versions: await n('versions'),
    diskFiles: disk.size,
    diskBytes: [...disk.values()].reduce((a, b) => a + b, 0),
  };
}

let slug = 0;
const createApp = async () => (await t.call('POST', '/v1/app/create', { key, body: { slug: `st-${++slug}`, type: 'openclaw' } })).body.data.id as string;
const createProfile = async (appId: string, identifier: string) => (await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier } })).body.data;

describe('storage cost', () => {
  it('1,000 profiles cost their overlays only, and deleting the app leaves no blob', async () => {
    const start = await counts();
    expect(start).toMatchObject({ blobs: 0, treeEntries: 0, overlays: 1, overlayEntries: 0, states: 0, diskFiles: 0 });
    const appId = await createApp();
    const v1: Bundle = {
      'AGENTS.md': '# agent',
      'config.json': '{"a":1}',
      'memory.md': 'nothing yet',
      'model.bin': randomBytes(200 * 1024), // above the inline limit: bytes only in the blob store
      'skills/a.md': 'skill a',
    };
    // Half the profiles exist before the first version, half are created after it.
    for (let i = 0; i < 500; i++) await createProfile(appId, `early-${i}`);
    // The version's files arrive in one batch PUT (one pack); the profiles' below one by one and in batches.
    const version = await deploy(t, key, appId, v1, { batch: true });
    for (let i = 0; i < 500; i++) expect((await createProfile(appId, `late-${i}`)).baseVersionId).toBe(version.id);

    const withProfiles = await counts();
    expect(withProfiles).toMatchObject({ blobs: 5, trees: 1, treeEntries: 5, overlays: 1, overlayEntries: 0, states: 1000, diskFiles: 5 });
    expect(withProfiles.diskBytes).toBe(Object.values(v1).reduce((n, b) => n + Buffer.byteLength(b), 0));
    const early = await t.ctx.db.selectFrom('profiles').select(['id', 'headStateId', 'baseVersionId']).where('identifier', 'like', 'early-%').execute();
    expect(early.filter((p) => p.headStateId && p.baseVersionId === version.id)).toHaveLength(500);

    // Three profiles change one file each; two more make the same change.
    const profiles = (await t.ctx.db.selectFrom('profiles').select('id').where('appId', '=', appId).orderBy('identifier').limit(5).execute()).map((p) => p.id);
    for (const [i, id] of profiles.slice(0, 3).entries()) expect((await commit(t, key, id, { ...v1, 'memory.md': `profile ${i} remembers` })).status).toBe(200);
    for (const id of profiles.slice(3)) expect((await commit(t, key, id, { ...v1, 'memory.md': 'shared memory' }, { batch: true })).status).toBe(200);
    expect(await packFiles()).toHaveLength(4); // the version's pack and profile 3's, each with its index
    const changed = await counts();
    expect(changed).toMatchObject({ blobs: 9, treeEntries: 5, overlays: 5, overlayEntries: 4, states: 1005, diskFiles: 9 });
    expect(changed.diskBytes - withProfiles.diskBytes).toBe(3 * Buffer.byteLength('profile 0 remembers') + Buffer.byteLength('shared memory'));

    // Deleting a profile collects its own content and keeps what another profile shares.
    const own = hex('profile 0 remembers');
    expect((await t.call('DELETE', `/v1/profile/${profiles[0]}`, { key })).status).toBe(200);
    expect((await t.call('DELETE', `/v1/profile/${profiles[3]}`, { key })).status).toBe(200);
    await eventually(async () => (await t.call('GET', `/v1/profile/${profiles[3]}`, { key })).status === 404, 'profiles deleted');
    await eventually(async () => (await t.call('GET', `/v1/profile/${profiles[0]}`, { key })).status === 404, 'profile deleted');
    const afterProfiles = await counts();
    expect(afterProfiles).toMatchObject({ blobs: 8, overlays: 4, overlayEntries: 3, diskFiles: 8 });
    expect((await storedBlobs()).has(own)).toBe(false);
    expect((await storedBlobs()).has(hex('shared memory'))).toBe(true);
    const sharing = (await t.call('GET', `/v1/profile/${profiles[4]}`, { key })).body.data.headStateId;
    const url = (await t.call('POST', `/v1/state/download/${sharing}`, { key })).body.data.url;
    expect((await download(url))['memory.md'].toString()).toBe('shared memory');

    expect((await t.call('DELETE', `/v1/app/${appId}`, { key })).status).toBe(200);
    await eventually(async () => (await t.call('GET', `/v1/app/${appId}`, { key })).status === 404, 'app deleted', 60_000);
    expect(await counts()).toMatchObject({ blobs: 0, trees: 0, treeEntries: 0, overlays: 1, overlayEntries: 0, states: 0, versions: 0, diskFiles: 0, diskBytes: 0 });
    expect(await packFiles()).toEqual([]);
    expect(await t.ctx.db.selectFrom('uploads').select('id').where('appId', '=', appId).execute()).toEqual([]);
  });

  it('never collects a blob that another app still uses', async () => {
    const a = await createApp();
    const b = await createApp();
    const shared = 'shared between apps';
    // App a's files are one pack; deleting app a takes it apart and keeps what others use.
    await deploy(t, key, a, { 'shared.md': shared, 'only-a.md': 'a', 'gone.md': 'only in a' }, { batch: true });
    const vb = await deploy(t, key, b, { 'shared.md': shared });
    const p = await createProfile(a, 'someone');
    expect((await commit(t, key, p.id, { 'shared.md': shared, 'mine.md': 'mine' })).status).toBe(200);
    // An open upload of app b that relies on content of app a (exists: true, no PUT yet).
    const pending = await t.call('POST', '/v1/version/upload', { key, body: { appId: b, files: [{ name: 'x.md', hash: `sha256-${hex('a')}` }] } });
    expect(pending.body.data.uploadUrls[0].exists).toBe(true);

    expect((await t.call('DELETE', `/v1/app/${a}`, { key })).status).toBe(200);
    await eventually(async () => (await t.call('GET', `/v1/app/${a}`, { key })).status === 404, 'app deleted');
    const disk = await storedBlobs();
    expect(disk.has(hex(shared))).toBe(true);
    expect(disk.has(hex('mine'))).toBe(false);
    expect(disk.has(hex('only in a'))).toBe(false);
    expect(await packFiles()).toEqual([]);
    // Held by the open upload, so its complete needs no PUT.
    expect(disk.has(hex('a'))).toBe(true);
    const done = await t.call('POST', `/v1/version/upload/${pending.body.data.uploadId}/complete`, { key, body: { appId: b, versionId: pending.body.data.versionId } });
    expect(done.status).toBe(200);
    const url = (await t.call('GET', `/v1/version/download/${vb.id}`, { key })).body.data.url;
    expect((await download(url))['shared.md'].toString()).toBe(shared);
  });
});
