import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSync } from '../../src/core/syncs.js';
import { readBlob, stateFiles } from '../../src/core/trees.js';
import { processSyncRange, startSync } from '../../src/sync/job.js';
import { commit, deploy, hex, treeHash, type Bundle } from '../files/bundle.js';
import { seedProfiles } from '../helpers/seed.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';

/*
 * One sync batch holding every kind of profile the job tells apart: profiles whose files carry
 * over unchanged (empty overlay, own files, own deletions), profiles that need a content merge
 * or get a conflict, a profile with no state yet, one whose head is still materializing, and
 * one already on the version. Files are checked byte for byte.
 */

const lines = (n: number, edit: Record<number, string> = {}) => Array.from({ length: n }, (_, i) => `${edit[i + 1] ?? `line ${i + 1}`}\n`).join('');
// A path with the characters an array literal quotes or escapes: quotes, commas, braces, spaces.
const ODD = 'notes/q "x", {y} é.md';

const V1: Bundle = {
  'CLAUDE.md': lines(12),
  'skills/keep.md': 'keep v1\n',
  'skills/gone.md': 'gone v1\n',
  'old.md': 'removed by v2\n',
  'logo.bin': Buffer.from([0, 1, 2, 3]),
};
const { 'old.md': _removed, ...V1_KEPT } = V1;
const V2: Bundle = { ...V1_KEPT, 'CLAUDE.md': lines(12, { 10: 'app line 10' }), 'skills/gone.md': 'gone v2\n', 'skills/new.md': 'new in v2\n' };
const V3: Bundle = { ...V2, 'CLAUDE.md': lines(12, { 10: 'app line 10', 11: 'app line 11' }) };

const without = (files: Bundle, ...paths: string[]) => Object.fromEntries(Object.entries(files).filter(([k]) => !paths.includes(k)));
const asBuffers = (f: Bundle) => Object.fromEntries(Object.entries(f).map(([k, v]) => [k, Buffer.isBuffer(v) ? v : Buffer.from(v)]));
const sizeOf = (f: Bundle) => Object.values(f).reduce((n, v) => n + Buffer.byteLength(v), 0);

let t: TestServer;
let key: string;
let orgId: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true });
  ({ key, id: orgId } = await t.org());
});
afterAll(async () => t?.close());

async function headOf(profileId: string) {
  const p = await t.ctx.db.selectFrom('profiles').selectAll().where('id', '=', profileId).executeTakeFirstOrThrow();
  const s = p.headStateId ? await t.ctx.db.selectFrom('states').selectAll().where('organizationId', '=', p.organizationId).where('id', '=', p.headStateId).executeTakeFirstOrThrow() : null;
  return { profile: p, state: s };
}

async function filesOf(profileId: string): Promise<Record<string, Buffer>> {
  const { state } = await headOf(profileId);
  const out: Record<string, Buffer> = {};
  for (const f of await stateFiles(t.ctx.db, state!)) out[f.path] = await readBlob(t.ctx, f.hash);
  return out;
}

async function syncTo(appId: string) {
  const syncId = (await t.call('POST', '/v1/version/sync', { key, body: { appId } })).body.data.syncId;
  return eventually(async () => {
    const s = (await t.call('GET', `/v1/sync/${syncId}`, { key })).body.data;
    return s.status === 'completed' || s.status === 'failed' ? s : undefined;
  }, `sync ${syncId}`, 60_000);
}

describe('a sync batch mixing carried-over, merged and special profiles', () => {
  it('gives each profile its exact files, state and counters, twice in a row', async () => {
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'sync-batch', type: 'claude' } })).body.data;
    const v1 = await deploy(t, key, app.id, V1);
    const create = async (identifier: string) => (await t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier } })).body.data;

    const plain = await create('plain');
    const own = await create('own');
    expect((await commit(t, key, own.id, { ...V1, [ODD]: 'mine\n' })).status).toBe(200);
    const dropKeep = await create('drop-keep');
    expect((await commit(t, key, dropKeep.id, without(V1, 'skills/keep.md'))).status).toBe(200);
    const dropGone = await create('drop-gone');
    expect((await commit(t, key, dropGone.id, without(V1, 'skills/gone.md'))).status).toBe(200);
    const merged = await create('merged');
    expect((await commit(t, key, merged.id, { ...V1, 'CLAUDE.md': lines(12, { 2: 'my line 2' }), [ODD]: 'odd\n' })).status).toBe(200);
    // A head still materializing.
    const busy = await create('busy');
    await t.ctx.db
      .insertInto('states')
      .values({ organizationId: orgId, id: 'state-batch-busy', profileId: busy.id, appId: app.id, number: 2, parentStateId: busy.headStateId, baseVersionId: v1.id, overlayHash: null, treeHash: null, source: 'snapshot', status: 'materializing', error: null, sandboxId: null })
      .execute();
    await t.ctx.db.updateTable('profiles').set({ headStateId: 'state-batch-busy' }).where('id', '=', busy.id).execute();

    const v2 = await deploy(t, key, app.id, V2);
    const current = await create('current');
    // No state at all: registering a version gives such a profile its first state, so this one
    // is written straight into the table after v2.
    const bare = { id: 'prof-batch-bare', organizationId: orgId, appId: app.id, identifier: 'bare', accessGroupId: app.defaultAccessGroupId };
    await t.ctx.db.insertInto('profiles').values({ ...bare, metadata: null, headStateId: null, baseVersionId: null, updatedAt: new Date() }).execute();
    const before = new Map<string, Awaited<ReturnType<typeof headOf>>>();
    for (const id of [plain.id, own.id, dropKeep.id, dropGone.id, merged.id, bare.id, busy.id, current.id]) before.set(id, await headOf(id));

    const first = await syncTo(app.id);
    expect(first).toMatchObject({ status: 'completed', versionId: v2.id, total: 8, processed: 8, updated: 6, unchanged: 1, failed: 1, conflicted: 1 });

    const want: Record<string, Bundle> = {
      [plain.id]: V2,
      [own.id]: { ...V2, [ODD]: 'mine\n' },
      [dropKeep.id]: without(V2, 'skills/keep.md'),
      // smart keeps the profile's side of a modify/delete: the deletion.
      [dropGone.id]: without(V2, 'skills/gone.md'),
      [merged.id]: { ...V2, 'CLAUDE.md': lines(12, { 2: 'my line 2', 10: 'app line 10' }), [ODD]: 'odd\n' },
      [bare.id]: V2,
    };
    for (const [id, files] of Object.entries(want)) {
      const label = (await headOf(id)).profile.identifier;
      expect(await filesOf(id), label).toEqual(asBuffers(files));
      const { profile, state } = await headOf(id);
      const prev = before.get(id)!;
      expect(profile.baseVersionId, label).toBe(v2.id);
      expect(profile.headSeq, label).toBe(prev.profile.headSeq + 1);
      const view = (await t.call('GET', `/v1/state/${state!.id}`, { key })).body.data;
      expect(view, label).toMatchObject({
        source: 'sync',
        status: 'ready',
        baseVersionId: v2.id,
        parentStateId: prev.profile.headStateId,
        number: (prev.state?.number ?? 0) + 1,
        treeHash: treeHash(files),
        fileCount: Object.keys(files).length,
        size: sizeOf(files),
      });
    }
    // The merge wrote its new content to the blob store as well as the database.
    expect(await t.ctx.blobs.has(hex(want[merged.id]['CLAUDE.md']))).toBe(true);
    const conflicts = (await t.call('GET', `/v1/conflict/list?appId=${app.id}&syncId=${first.id}`, { key })).body.data.items;
    expect(conflicts).toEqual([
      expect.objectContaining({ profileId: dropGone.id, path: 'skills/gone.md', kind: 'modify_delete', status: 'resolved', resolution: 'current', currentHash: null, resultHash: null }),
    ]);
    // The materializing profile failed and kept its head; the current one got no state.
    for (const id of [busy.id, current.id]) {
      const { profile } = await headOf(id);
      expect(profile.headStateId).toBe(before.get(id)!.profile.headStateId);
      expect(profile.headSeq).toBe(before.get(id)!.profile.headSeq);
    }
    const items = await t.ctx.db.selectFrom('syncItems').select(['profileId', 'outcome', 'conflicted', 'error']).where('syncId', '=', first.id).execute();
    expect(Object.fromEntries(items.map((i) => [i.profileId, [i.outcome, i.conflicted]]))).toEqual({
      [plain.id]: ['updated', false],
      [own.id]: ['updated', false],
      [dropKeep.id]: ['updated', false],
      [dropGone.id]: ['updated', true],
      [merged.id]: ['updated', false],
      [bare.id]: ['updated', false],
      [busy.id]: ['failed', false],
      [current.id]: ['unchanged', false],
    });
    expect(items.find((i) => i.profileId === busy.id)!.error).toMatch(/materializing/);

    // A second version: the states the first sync wrote are the base of the next merge.
    const v3 = await deploy(t, key, app.id, V3);
    const second = await syncTo(app.id);
    expect(second).toMatchObject({ status: 'completed', versionId: v3.id, total: 8, processed: 8, updated: 7, unchanged: 0, failed: 1, conflicted: 0 });
    const next: Record<string, Bundle> = {
      [plain.id]: V3,
      [own.id]: { ...V3, [ODD]: 'mine\n' },
      [dropKeep.id]: without(V3, 'skills/keep.md'),
      [dropGone.id]: without(V3, 'skills/gone.md'),
      [merged.id]: { ...V3, 'CLAUDE.md': lines(12, { 2: 'my line 2', 10: 'app line 10', 11: 'app line 11' }), [ODD]: 'odd\n' },
      [bare.id]: V3,
      [current.id]: V3,
    };
    for (const [id, files] of Object.entries(next)) {
      const label = (await headOf(id)).profile.identifier;
      expect(await filesOf(id), label).toEqual(asBuffers(files));
      const { state } = await headOf(id);
      expect(state, label).toMatchObject({ baseVersionId: v3.id, treeHash: treeHash(files), fileCount: Object.keys(files).length, size: sizeOf(files) });
    }
  });
});

describe('range jobs racing on one sync', () => {
  it('merges each of 2,500 profiles exactly once when three jobs share the range', async () => {
    const org = await t.org();
    const app = (await t.call('POST', '/v1/app/create', { key: org.key, body: { slug: 'sync-race', type: 'claude' } })).body.data;
    const claude = (n: number) => lines(30, { [n]: `edited line ${n}` });
    const v1 = await deploy(t, org.key, app.id, { 'CLAUDE.md': lines(30), 'a.md': 'a\n' });
    await seedProfiles(t.ctx, { id: app.id, organizationId: org.id, defaultAccessGroupId: app.defaultAccessGroupId }, v1.id, {
      count: 2500,
      editEvery: 7,
      editPath: 'CLAUDE.md',
      editContent: () => claude(3),
      prefix: 'race',
    });
    // Registering v2 does not queue a sync; the jobs below are run by hand, three at once.
    const v2 = await deploy(t, org.key, app.id, { 'CLAUDE.md': claude(25), 'a.md': 'a\n' });
    // Nothing reaches the queue, so the server's own workers stay out of it.
    const quiet = { ...t.ctx, queue: Object.assign(Object.create(t.ctx.queue), { send: async () => null }) };
    const sync = await createSync(quiet, org.id, { appId: app.id });
    await startSync(quiet, sync.id);
    const job = { syncId: sync.id, after: null, upto: null };
    await Promise.all([processSyncRange(t.ctx, job), processSyncRange(t.ctx, job), processSyncRange(t.ctx, job)]);

    const done = await t.ctx.db.selectFrom('syncs').selectAll().where('id', '=', sync.id).executeTakeFirstOrThrow();
    expect(done).toMatchObject({ status: 'completed', total: 2500, processed: 2500, updated: 2500, unchanged: 0, failed: 0, conflicted: 0, versionId: v2.id });
    const perProfile = await sql<{ n: number; c: number }>`
      select count(*)::int as c, n from (
        select count(*)::int as n from states where app_id = ${app.id} and source = 'sync' group by profile_id
      ) x group by n`.execute(t.ctx.db);
    expect(perProfile.rows).toEqual([{ c: 2500, n: 1 }]);
    const edited = await filesOf('prof-race00000007');
    expect(edited['CLAUDE.md'].toString()).toBe(lines(30, { 3: 'edited line 3', 25: 'edited line 25' }));
    expect(edited['memory/MEMORY.md'].toString()).toBe('# Memory of user 7\n- likes tea\n');
    const untouched = await filesOf('prof-race00000008');
    expect(untouched['CLAUDE.md'].toString()).toBe(claude(25));
  });
});
