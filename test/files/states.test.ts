import { randomBytes } from 'node:crypto';
import yazl from 'yazl';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalBlobStore } from '../../src/storage/blobs/local.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { asStrings, commit, declare, deploy, download, hex, put, putAll, putAllBatched, putBatch, rawZip, ref, tarGz, tarball, treeHash, type Bundle } from './bundle.js';

// Profile states: first state from the app head, uploads with compare-and-set, rollback,
// downloads and snapshots, on the local blob store through a real socket.

const LIMIT = 1024 * 1024;
let t: TestServer;
let key: string;
let other: { key: string };

beforeAll(async () => {
  // A small bundle limit so oversized uploads and archives are cheap to build.
  t = await startTestServer({ listen: true, config: { maxBundleBytes: LIMIT } });
  key = (await t.org()).key;
  other = await t.org();
});
afterAll(async () => t?.close());

const V1: Bundle = { 'CLAUDE.md': '# v1', '.claude/settings.json': '{}', 'memory/notes.md': 'empty', 'keep.txt': 'unchanged' };

let n = 0;
async function appWithVersion(files: Bundle | null = V1, type: 'claude' | 'openclaw' = 'claude') {
  const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: `s-${++n}`, type } })).body.data.id as string;
  const version = files ? await deploy(t, key, appId, files) : null;
  return { appId, version };
}

async function profile(appId: string, identifier = `user-${++n}`) {
  const res = await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier } });
  expect(res.status).toBe(200);
  return res.body.data;
}

const getState = async (id: string, k = key) => t.call('GET', `/v1/state/${id}`, { key: k });
const getProfile = async (id: string) => (await t.call('GET', `/v1/profile/${id}`, { key })).body.data;

describe('first states', () => {
  it('profiles start from the app head version, also those created before any version', async () => {
    const { appId } = await appWithVersion(null);
    const early = await profile(appId);
    expect(early).toMatchObject({ headStateId: null, baseVersionId: null });
    const v1 = await deploy(t, key, appId, V1);
    const initialized = await getProfile(early.id);
    expect(initialized).toMatchObject({ baseVersionId: v1.id, headStateId: expect.stringMatching(/^state-[A-Za-z0-9]{16}$/) });
    const late = await profile(appId);
    expect(late).toMatchObject({ baseVersionId: v1.id, headStateId: expect.stringMatching(/^state-/) });
    for (const p of [initialized, late]) {
      const s = (await getState(p.headStateId)).body.data;
      expect(s).toMatchObject({ profileId: p.id, number: 1, parentStateId: null, baseVersionId: v1.id, source: 'init', status: 'ready', isHead: true });
      expect(s).toMatchObject({ treeHash: v1.treeHash, fileCount: v1.fileCount, size: v1.size });
      expect(s.files).toEqual(v1.files);
    }
    // A later version does not touch profiles that already have a state (that is a sync).
    await deploy(t, key, appId, { ...V1, 'CLAUDE.md': '# v2' });
    expect((await getProfile(late.id)).baseVersionId).toBe(v1.id);
  });
});

describe('state upload → PUT → complete → get → download → rollback', () => {
  it('commits an overlay on the base version and moves the head', async () => {
    const { appId, version } = await appWithVersion();
    const p = await profile(appId);
    const init = p.headStateId;
    const { 'memory/notes.md': _dropped, ...kept } = V1;
    const files: Bundle = { ...kept, 'CLAUDE.md': '# mine', 'memory/new.md': 'hello' };
    const res = await commit(t, key, p.id, files);
    expect(res.status).toBe(200);
    const s2 = res.body.data;
    expect(s2).toMatchObject({ profileId: p.id, number: 2, parentStateId: init, baseVersionId: version.id, source: 'upload', status: 'ready', isHead: true });
    expect(s2).toMatchObject({ treeHash: treeHash(files), fileCount: 4 });
    expect(s2.files.map((f: { name: string }) => f.name)).toEqual(['.claude/settings.json', 'CLAUDE.md', 'keep.txt', 'memory/new.md']);
    expect((await getProfile(p.id)).headStateId).toBe(s2.id);

    // Stored as the difference from the base version: two changed paths and one deletion.
    const state = await t.ctx.db.selectFrom('states').select('overlayHash').where('id', '=', s2.id).executeTakeFirstOrThrow();
    const overlay = await t.ctx.db.selectFrom('overlayEntries').select(['path', 'blobHash']).where('overlayHash', '=', state.overlayHash!).orderBy('path').execute();
    expect(overlay).toEqual([
      { path: 'CLAUDE.md', blobHash: hex('# mine') },
      { path: 'memory/new.md', blobHash: hex('hello') },
      { path: 'memory/notes.md', blobHash: null },
    ]);

    const dl = await t.call('POST', `/v1/state/download/${s2.id}`, { key });
    expect(dl.status).toBe(200);
    expect(asStrings(await download(dl.body.data.url))).toEqual(asStrings(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, Buffer.from(v)]))));
    expect((await t.call('POST', `/v1/state/download/${s2.id}`, { key, body: {} })).status).toBe(200);

    const back = await t.call('POST', '/v1/state/rollback', { key, body: { profileId: p.id, toStateId: init, reason: 'undo' } });
    expect(back.status).toBe(200);
    expect(back.body.data).toMatchObject({ id: init, isHead: true, number: 1 });
    expect(await getProfile(p.id)).toMatchObject({ headStateId: init, baseVersionId: version.id });
    const record = await t.ctx.db.selectFrom('rollbacks').selectAll().where('profileId', '=', p.id).executeTakeFirstOrThrow();
    expect(record).toMatchObject({ kind: 'state', fromId: s2.id, toId: init, reason: 'undo' });

    const s3 = (await commit(t, key, p.id, { ...V1, 'after.md': 'x' })).body.data;
    expect(s3).toMatchObject({ number: 3, parentStateId: init });
    const list = await t.call('GET', `/v1/state/list?profileId=${p.id}`, { key });
    expect(list.body.data.total).toBe(3);
    expect(list.body.data.items.map((s: { number: number; isHead: boolean }) => [s.number, s.isHead])).toEqual([
      [3, true],
      [2, false],
      [1, false],
    ]);
  });

  it('two concurrent completes on one profile: one wins, the other gets 409 head_moved', async () => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    const a = { ...V1, 'a.md': 'from writer A' };
    const b = { ...V1, 'b.md': 'from writer B' };
    const upA = (await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, files: declare(a) } })).body.data;
    const upB = (await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, files: declare(b) } })).body.data;
    await putAllBatched(upA.batchUrl, upA.uploadUrls, a); // one writer's files in a pack, the other's one by one
    await putAll(upB.uploadUrls, b);
    const [ra, rb] = await Promise.all([
      t.call('POST', `/v1/state/upload/${upA.uploadId}/complete`, { key, body: { profileId: p.id, stateId: upA.stateId } }),
      t.call('POST', `/v1/state/upload/${upB.uploadId}/complete`, { key, body: { profileId: p.id, stateId: upB.stateId } }),
    ]);
    expect([ra.status, rb.status].sort()).toEqual([200, 409]);
    const [winner, loser] = ra.status === 200 ? [ra, rb] : [rb, ra];
    const loserId = ra.status === 200 ? upB.stateId : upA.stateId;
    expect(loser.body.code).toBe('head_moved');
    expect((await getProfile(p.id)).headStateId).toBe(winner.body.data.id);
    expect((await getState(loserId)).status).toBe(404);
    expect((await t.call('GET', `/v1/state/list?profileId=${p.id}`, { key })).body.data.total).toBe(2);
    // Only the winner's content went into the store: the loser's stays staged, for nobody.
    const stored = await (t.ctx.blobs as LocalBlobStore).list();
    expect(stored.has(hex(ra.status === 200 ? a['a.md'] : b['b.md']))).toBe(true);
    expect(stored.has(hex(ra.status === 200 ? b['b.md'] : a['a.md']))).toBe(false);
    // A fresh upload from the new head goes through.
    expect((await commit(t, key, p.id, b)).status).toBe(200);
  });

  it('state/create registers an open upload; completing twice returns the same state', async () => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    const files = { ...V1, 'x.md': 'x' };
    const up = (await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, stateId: 'my-state_1', files: declare(files) } })).body.data;
    expect(up.stateId).toBe('my-state_1');
    await putAll(up.uploadUrls, files);
    const created = await t.call('POST', '/v1/state/create', { key, body: { profileId: p.id, stateId: 'my-state_1' } });
    expect(created.status).toBe(200);
    expect(created.body.data).toMatchObject({ id: 'my-state_1', source: 'upload', isHead: true });
    const again = await t.call('POST', `/v1/state/upload/${up.uploadId}/complete`, { key, body: { profileId: p.id, stateId: 'my-state_1' } });
    expect(again.body.data).toEqual(created.body.data);
    expect((await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, stateId: 'my-state_1', files: [] } })).status).toBe(409);
  });

  it('complete and state/create give only the state their upload registered, also once the upload is swept', async () => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    const files = { ...V1, 'y.md': 'y' };
    const up = (await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, files: declare(files) } })).body.data;
    await putAll(up.uploadUrls, files);
    const completeOf = (uploadId: string, stateId: string) => t.call('POST', `/v1/state/upload/${uploadId}/complete`, { key, body: { profileId: p.id, stateId } });
    const first = await completeOf(up.uploadId, up.stateId);
    expect(first.status).toBe(200);
    await t.ctx.db.deleteFrom('uploads').where('id', '=', up.uploadId).execute(); // what the sweep does after 24 h
    expect((await completeOf(up.uploadId, up.stateId)).body.data).toEqual(first.body.data);
    expect((await t.call('POST', '/v1/state/create', { key, body: { profileId: p.id, stateId: up.stateId } })).body.data).toEqual(first.body.data);

    // An upload id that never registered this state, and a state no upload registered (the
    // profile's first state): 404, not someone else's state.
    const unknown = await completeOf('upload-doesnotexist0000', up.stateId);
    expect(unknown).toMatchObject({ status: 404, body: { code: 'not_found' } });
    expect((await completeOf('upload-doesnotexist0000', p.headStateId)).status).toBe(404);
    expect((await completeOf(up.uploadId, p.headStateId)).status).toBe(404);
    const init = await t.call('POST', '/v1/state/create', { key, body: { profileId: p.id, stateId: p.headStateId } });
    expect(init).toMatchObject({ status: 404, body: { error: `upload for state "${p.headStateId}" not found` } });
  });

  it('a state upload settles the profile open conflicts as manual', async () => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    const org = (await t.ctx.db.selectFrom('profiles').select('organizationId').where('id', '=', p.id).executeTakeFirstOrThrow()).organizationId;
    await t.ctx.db
      .insertInto('conflicts')
      .values({ id: `conf-${++n}`, organizationId: org, appId, profileId: p.id, syncId: 'sync-x', path: 'CLAUDE.md', kind: 'content', strategy: 'manual', status: 'open', resolution: null, baseHash: null, currentHash: null, incomingHash: null, resultHash: null })
      .execute();
    expect((await commit(t, key, p.id, V1)).status).toBe(200);
    const c = await t.ctx.db.selectFrom('conflicts').selectAll().where('profileId', '=', p.id).executeTakeFirstOrThrow();
    expect(c).toMatchObject({ status: 'resolved', resolution: 'manual', resultHash: ref(V1['CLAUDE.md']) });
  });

  it('hides states of another organization', async () => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    expect((await getState(p.headStateId, other.key)).status).toBe(404);
    expect((await t.call('POST', `/v1/state/download/${p.headStateId}`, { key: other.key })).status).toBe(404);
    expect((await t.call('GET', `/v1/state/list?profileId=${p.id}`, { key: other.key })).status).toBe(404);
    expect((await t.call('POST', '/v1/state/upload', { key: other.key, body: { profileId: p.id, files: [] } })).status).toBe(404);
    const p2 = await profile(appId);
    expect((await t.call('POST', '/v1/state/rollback', { key, body: { profileId: p2.id, toStateId: p.headStateId } })).status).toBe(404);
  });
});

/** A zip whose entry is deflated (yazl), e.g. a few KB that inflate to megabytes. */
async function deflatedZip(name: string, data: Buffer): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  zip.addBuffer(data, name);
  zip.end();
  const chunks: Buffer[] = [];
  for await (const c of zip.outputStream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('limits', () => {
  it('refuses a PUT over the bundle limit and stores nothing', async () => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    const big = randomBytes(LIMIT + 1);
    const up = (await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, files: [{ name: 'big.bin', hash: ref(big) }] } })).body.data;
    const res = await put(up.uploadUrls[0], big);
    expect(res.status).toBe(413);
    const done = await t.call('POST', `/v1/state/upload/${up.uploadId}/complete`, { key, body: { profileId: p.id, stateId: up.stateId } });
    expect(done.status).toBe(400);
    expect(done.body.details).toMatchObject({ missing: ['big.bin'] });
  });

  it('refuses a batch whose files exceed the bundle limit, keeping what came before', async () => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    const small = 'fits';
    const big = randomBytes(LIMIT);
    const files = [
      { name: 'small.txt', hash: ref(small) },
      { name: 'big.bin', hash: ref(big) },
    ];
    const up = (await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, files } })).body.data;
    const res = await putBatch(up.batchUrl, await tarball([{ name: 'small.txt', data: small }, { name: 'big.bin', data: big }]));
    expect(res.status).toBe(413);
    const done = await t.call('POST', `/v1/state/upload/${up.uploadId}/complete`, { key, body: { profileId: p.id, stateId: up.stateId } });
    expect(done.status).toBe(400);
    expect(done.body.details).toEqual({ missing: ['big.bin'], mismatched: [] });
  });
});

describe('batch upload', () => {
  it('commits a state from one tar PUT to the batch URL', async () => {
    const { appId, version } = await appWithVersion();
    const p = await profile(appId);
    const files: Bundle = { ...V1, 'memory/notes.md': 'from a batch', 'new.md': 'new' };
    const up = (await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, files: declare(files) } })).body.data;
    const todo = up.uploadUrls.filter((u: { exists: boolean }) => !u.exists).map((u: { name: string }) => u.name);
    expect(todo.sort()).toEqual(['memory/notes.md', 'new.md']);
    const res = await putBatch(up.batchUrl, await tarball(todo.map((name: string) => ({ name, data: files[name] }))));
    expect(res.status).toBe(200);
    const done = await t.call('POST', `/v1/state/upload/${up.uploadId}/complete`, { key, body: { profileId: p.id, stateId: up.stateId } });
    expect(done.status).toBe(200);
    expect(done.body.data).toMatchObject({ source: 'upload', isHead: true, baseVersionId: version!.id, treeHash: treeHash(files) });
    const url = (await t.call('POST', `/v1/state/download/${done.body.data.id}`, { key })).body.data.url;
    expect(asStrings(await download(url))).toEqual(asStrings(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, Buffer.from(v)]))));
  });
});

describe('snapshots', () => {
  /** Uploads an archive with state/upload (not completed) and returns its signed URL. */
  async function stored(profileId: string, archive: Buffer): Promise<string> {
    const up = (await t.call('POST', '/v1/state/upload', { key, body: { profileId, files: [{ name: 'snapshot', hash: ref(archive) }] } })).body.data;
    expect((await put(up.uploadUrls[0], archive)).status).toBe(200);
    return up.uploadUrls[0].url;
  }

  async function snapshot(profileId: string, storageUrl: string, k = key) {
    return t.call('POST', '/v1/state/snapshot', { key: k, body: { profileId, storageUrl, sandboxId: 'sbx-1' } });
  }

  const settled = (id: string) => eventually(async () => {
    const s = (await getState(id)).body.data;
    return s.status !== 'materializing' && s;
  }, `state ${id} to settle`);

  it('materializes a tar.gz into the new head', async () => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    const archive = await tarGz([{ name: './', type: 'directory' }, { name: './CLAUDE.md', data: '# restored' }, { name: './.claude/settings.json', data: '{}' }, { name: 'deep/a.txt', data: 'a' }]);
    const res = await snapshot(p.id, await stored(p.id, archive));
    expect(res.status).toBe(200);
    expect(res.body.data).toMatchObject({ source: 'snapshot', status: 'materializing', parentStateId: p.headStateId, isHead: false, number: 2 });
    const s = await settled(res.body.data.id);
    expect(s).toMatchObject({ status: 'ready', isHead: true, fileCount: 3 });
    expect(s.files.map((f: { name: string }) => f.name)).toEqual(['.claude/settings.json', 'CLAUDE.md', 'deep/a.txt']);
    expect(asStrings(await download((await t.call('POST', `/v1/state/download/${s.id}`, { key })).body.data.url))).toEqual({
      'CLAUDE.md': '# restored',
      '.claude/settings.json': '{}',
      'deep/a.txt': 'a',
    });
  });

  it('restores from a download URL of this server', async () => {
    const { appId, version } = await appWithVersion();
    const p = await profile(appId);
    await commit(t, key, p.id, { 'other.md': 'other' });
    const url = (await t.call('GET', `/v1/version/download/${version.id}`, { key })).body.data.url;
    const s = await settled((await snapshot(p.id, url)).body.data.id);
    expect(s).toMatchObject({ status: 'ready', isHead: true, treeHash: version.treeHash });
  });

  it('downloads and restores a file whose name starts like a drive letter', async () => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    const committed = await commit(t, key, p.id, { 'c:notes.txt': 'not a drive', 'a.md': 'a' });
    expect(committed.status).toBe(200);
    const url = (await t.call('POST', `/v1/state/download/${committed.body.data.id}`, { key })).body.data.url;
    // A zip may not hold a drive letter: the name goes as ./c:notes.txt, which unzips to the same file.
    expect(asStrings(await download(url))).toEqual({ './c:notes.txt': 'not a drive', 'a.md': 'a' });
    const s = await settled((await snapshot(p.id, url)).body.data.id);
    expect(s).toMatchObject({ status: 'ready', isHead: true, treeHash: committed.body.data.treeHash });
    expect(s.files.map((f: { name: string }) => f.name)).toEqual(['a.md', 'c:notes.txt']);
  });

  it.each([
    ['a zip with ../../etc/passwd', () => rawZip([{ name: 'ok.txt', data: 'fine' }, { name: '../../etc/passwd', data: 'root:x:0:0' }]), /\.\.\/\.\.\/etc\/passwd/],
    ['a zip with a symlink', () => rawZip([{ name: 'link', data: '/etc/passwd', mode: 0o120777 }]), /symbolic link/],
    ['a zip whose stored entry claims fewer bytes than it holds', () => rawZip([{ name: 'a.txt', data: 'hello world', declaredSize: 5 }, { name: 'b.txt', data: 'b' }]), /"a\.txt" is corrupt: its bytes do not match its CRC-32/],
    ['a zip whose stored entry claims more bytes than it holds', () => rawZip([{ name: 'a.txt', data: 'hello world', declaredSize: 50 }, { name: 'b.txt', data: 'b' }]), /"a\.txt" is corrupt/],
    ['a zip with an absolute path', () => rawZip([{ name: '/etc/cron.d/x', data: 'x' }]), /absolute/],
    ['a zip with a backslash in a name', () => rawZip([{ name: 'notes\\today.md', data: 'x' }]), /"notes\\\\today\.md" is not allowed: its path contains a backslash/],
    ['a tar.gz with a symlink', () => tarGz([{ name: 'link', type: 'symlink', linkname: '/etc/passwd' }]), /symlink/],
    ['a tar.gz with ../', () => tarGz([{ name: 'a/../../x', data: 'x' }]), /"\.\." segment/],
    ['a zip holding a file and a folder of one name', () => rawZip([{ name: 'notes', data: 'a file' }, { name: 'notes/today.md', data: 'in the folder' }]), /both a file and a folder|also a file/],
    ['a tar.gz with a file inside another file', () => tarGz([{ name: 'notes/today.md', data: 'in the folder' }, { name: 'notes', data: 'a file' }]), /"notes".*both a file and a folder/],
    ['not an archive', () => Buffer.from('plain text'), /neither a zip nor a tar\.gz/],
    ['an invalid .claude/settings.json', () => rawZip([{ name: '.claude/settings.json', data: '{nope' }]), /\.claude\/settings\.json/],
    ['a zip bomb', () => deflatedZip('zeros.bin', Buffer.alloc(20 * 1024 * 1024)), /compression ratio/],
    ['files over the bundle limit', () => tarGz([{ name: 'a.txt', data: 'a'.repeat(LIMIT / 2) }, { name: 'b.txt', data: 'b'.repeat(LIMIT / 2 + 1) }]), /exceed 1048576 bytes/],
    ['10,001 files', () => rawZip(Array.from({ length: 10_001 }, (_, i) => ({ name: `f${i}`, data: '' }))), /more than 10000 files/],
  ])('rejects %s: failed with the reason, head unchanged, nothing stored', async (_what, make, reason) => {
    const { appId } = await appWithVersion();
    const p = await profile(appId);
    const archive = await make();
    const blobsBefore = (await t.ctx.db.selectFrom('blobs').select('hash').execute()).length;
    const res = await snapshot(p.id, await stored(p.id, archive));
    expect(res.status).toBe(200);
    const s = await settled(res.body.data.id);
    expect(s.status).toBe('failed');
    expect(s.error).toMatch(reason);
    expect(s.isHead).toBe(false);
    expect((await getProfile(p.id)).headStateId).toBe(p.headStateId);
    expect((await t.ctx.db.selectFrom('blobs').select('hash').execute()).length).toBe(blobsBefore);
    expect((await t.call('POST', `/v1/state/download/${s.id}`, { key })).status).toBe(409);
  });

  it('accepts only unexpired URLs signed by this server for the caller, registering nothing otherwise', async () => {
    const { appId, version } = await appWithVersion();
    const p = await profile(appId);
    const url = await stored(p.id, rawZip([{ name: 'a', data: 'a' }]));
    const theirs = (await t.call('GET', `/v1/version/download/${version.id}`, { key })).body.data.url;
    const bad = [
      'https://example.com/snapshot.zip',
      'file:///etc/passwd',
      url.replace(/sig=[^&]+/, 'sig=AAAA'),
      url.replace('/0?', '/1?'),
      theirs.slice(0, -3) + 'abc',
      url.replace(/\/upload\/[^/]+\//, '/upload/%ZZ/'), // an upload id that does not decode
    ];
    for (const storageUrl of bad) {
      const res = await snapshot(p.id, storageUrl);
      expect(res.status, storageUrl).toBe(400);
    }
    // Another organization cannot restore from our URLs.
    const theirApp = (await t.call('POST', '/v1/app/create', { key: other.key, body: { slug: 'snap', type: 'openclaw' } })).body.data.id;
    const theirProfile = (await t.call('POST', '/v1/profile/create', { key: other.key, body: { appId: theirApp, identifier: 'u' } })).body.data;
    expect((await snapshot(theirProfile.id, url, other.key)).status).toBe(400);
    // Our download URL reads to them as a forged one: nothing tells them it is genuine.
    const ours = await snapshot(theirProfile.id, theirs, other.key);
    const forged = await snapshot(theirProfile.id, theirs.replace(/\.[^.?]+(\?|$)/, '.AAAA$1'), other.key);
    expect(ours.status).toBe(400);
    expect(ours.body.error).toBe(forged.body.error);
    const realNow = t.ctx.now;
    t.ctx.now = () => new Date(Date.now() + 16 * 60 * 1000);
    try {
      expect((await snapshot(p.id, url)).status).toBe(400);
    } finally {
      t.ctx.now = realNow;
    }
    expect((await t.call('GET', `/v1/state/list?profileId=${p.id}`, { key })).body.data.total).toBe(1);
  });
});
