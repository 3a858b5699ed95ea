import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stateFiles } from '../../src/core/trees.js';
import { readBlob } from '../../src/core/trees.js';
import { commit, deploy, treeHash } from '../files/bundle.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
let key: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true });
  key = (await t.org()).key;
});
afterAll(async () => t?.close());

const lines = (n: number, edit: Record<number, string> = {}) =>
  Array.from({ length: n }, (_, i) => `${edit[i + 1] ?? `line ${i + 1}`}\n`).join('');
const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

const V1 = {
  'CLAUDE.md': lines(12),
  '.claude/settings.json': json({ model: 'sonnet', permissions: { allow: ['Read'] }, theme: 'dark' }),
  'skills/tool.md': 'tool v1\n',
  'logo.bin': Buffer.from([0, 1, 2, 3]),
};
const V2 = {
  ...V1,
  'CLAUDE.md': lines(12, { 10: 'app line 10' }),
  '.claude/settings.json': json({ model: 'opus', permissions: { allow: ['Read'] }, theme: 'dark' }),
  'skills/tool.md': 'tool v2\n',
  'logo.bin': Buffer.from([0, 9, 9, 9]),
};
const V3 = { ...V2, 'skills/new.md': 'new skill\n' };

type Files = Record<string, string | Buffer>;
/** The edit kinds a profile makes on top of V1, and what it then holds. */
const EDITS: ((i: number) => Files)[] = [
  () => ({ ...V1 }), // no edit
  (i) => ({ ...V1, [`memory/user-${i}.md`]: `memory of ${i}\n` }), // own file only
  () => ({ ...V1, 'CLAUDE.md': lines(12, { 2: 'my line 2' }) }), // clean text merge
  () => ({ ...V1, 'CLAUDE.md': lines(12, { 10: 'my line 10' }), '.claude/settings.json': json({ model: 'haiku', permissions: { allow: ['Read', 'Write'] }, theme: 'dark' }) }), // text + JSON conflict
  () => {
    const { 'skills/tool.md': _gone, ...rest } = V1;
    return { ...rest, 'logo.bin': Buffer.from([0, 7, 7, 7]), '.claude/settings.json': json({ model: 'sonnet', permissions: { allow: ['Read'] }, theme: 'light' }) }; // modify/delete + binary + clean JSON
  },
];
const STRATEGIES = ['smart', 'current', 'incoming', 'manual'] as const;

/** What a profile of edit kind `k` must hold after syncing V1 → V3 with `strategy`. */
function expected(k: number, i: number, strategy: (typeof STRATEGIES)[number]): Files {
  const mine = EDITS[k](i);
  switch (k) {
    case 0:
      return { ...V3 };
    case 1:
      return { ...V3, [`memory/user-${i}.md`]: `memory of ${i}\n` };
    case 2:
      // The profile changed line 2, the app line 10: only `smart` content-merges; the
      // others resolve a file both sides changed by the table.
      return {
        ...V3,
        'CLAUDE.md':
          strategy === 'smart' ? lines(12, { 2: 'my line 2', 10: 'app line 10' }) : strategy === 'incoming' ? V3['CLAUDE.md'] : mine['CLAUDE.md'],
      };
    case 3:
      return {
        ...V3,
        // smart: the conflicting line keeps the profile's side.
        'CLAUDE.md': strategy === 'incoming' ? V3['CLAUDE.md'] : mine['CLAUDE.md'],
        // smart: `model` conflicts (kept mine), `permissions.allow` changed only by me.
        '.claude/settings.json':
          strategy === 'incoming' ? V3['.claude/settings.json'] : mine['.claude/settings.json'],
      };
    case 4: {
      const out: Files = { ...V3 };
      if (strategy !== 'incoming') delete out['skills/tool.md'];
      out['logo.bin'] = strategy === 'incoming' ? V3['logo.bin'] : mine['logo.bin'];
      out['.claude/settings.json'] =
        strategy === 'smart'
          ? json({ model: 'opus', permissions: { allow: ['Read'] }, theme: 'light' })
          : strategy === 'incoming'
            ? V3['.claude/settings.json']
            : mine['.claude/settings.json'];
      return out;
    }
  }
  throw new Error('unknown kind');
}

/** Conflict paths a profile of kind `k` must get, with their kind. */
function expectedConflicts(k: number, strategy: (typeof STRATEGIES)[number]): Record<string, string> {
  switch (k) {
    case 2:
      return strategy === 'smart' ? {} : { 'CLAUDE.md': 'content' };
    case 3:
      return { 'CLAUDE.md': 'content', '.claude/settings.json': 'content' };
    case 4:
      return { 'skills/tool.md': 'modify_delete', 'logo.bin': 'binary', ...(strategy === 'smart' ? {} : { '.claude/settings.json': 'content' }) };
    default:
      return {};
  }
}

async function filesOf(profileId: string): Promise<Record<string, Buffer>> {
  const p = await t.ctx.db.selectFrom('profiles').select(['headStateId', 'organizationId']).where('id', '=', profileId).executeTakeFirstOrThrow();
  const s = await t.ctx.db.selectFrom('states').selectAll().where('organizationId', '=', p.organizationId).where('id', '=', p.headStateId!).executeTakeFirstOrThrow();
  const out: Record<string, Buffer> = {};
  for (const f of await stateFiles(t.ctx.db, s)) out[f.path] = await readBlob(t.ctx, f.hash);
  return out;
}

const asBuffers = (f: Files) => Object.fromEntries(Object.entries(f).map(([k, v]) => [k, Buffer.isBuffer(v) ? v : Buffer.from(v)]));

async function waitSync(syncId: string) {
  return eventually(async () => {
    const res = await t.call('GET', `/v1/sync/${syncId}`, { key });
    return res.body.data.status === 'completed' || res.body.data.status === 'failed' ? res.body.data : undefined;
  }, `sync ${syncId}`, 60_000);
}

describe('version sync end to end', () => {
  it('merges three versions into 50 profiles with every strategy, byte for byte', async () => {
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'sync-e2e', type: 'claude' } })).body.data;
    const v1 = await deploy(t, key, app.id, V1);
    const profiles: { id: string; i: number; k: number; strategy: (typeof STRATEGIES)[number] }[] = [];
    for (let i = 0; i < 50; i++) {
      const p = (await t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier: `user-${i}` } })).body.data;
      expect(p.baseVersionId).toBe(v1.id);
      const k = Math.floor(i / 4) % EDITS.length;
      if (k !== 0) expect((await commit(t, key, p.id, EDITS[k](i))).status).toBe(200);
      profiles.push({ id: p.id, i, k, strategy: STRATEGIES[i % 4] });
    }
    await deploy(t, key, app.id, V2);
    const v3 = await deploy(t, key, app.id, V3);

    const syncs: Record<string, string> = {};
    for (const strategy of STRATEGIES) {
      const ids = profiles.filter((p) => p.strategy === strategy).map((p) => p.id);
      const res = await t.call('POST', '/v1/version/sync', { key, body: { appId: app.slug, strategy, profileIds: ids } });
      expect(res.status).toBe(200);
      expect(res.body.data).toEqual({ syncId: expect.stringMatching(/^sync-/), status: 'queued' });
      syncs[strategy] = res.body.data.syncId;
    }
    for (const strategy of STRATEGIES) {
      const sync = await waitSync(syncs[strategy]);
      const group = profiles.filter((p) => p.strategy === strategy);
      const conflicted = group.filter((p) => Object.keys(expectedConflicts(p.k, strategy)).length > 0).length;
      expect(sync).toMatchObject({ status: 'completed', versionId: v3.id, strategy, total: group.length, processed: group.length, updated: group.length, unchanged: 0, failed: 0, conflicted });
    }

    for (const p of profiles) {
      const label = `profile ${p.i} kind ${p.k} ${p.strategy}`;
      expect(await filesOf(p.id), label).toEqual(asBuffers(expected(p.k, p.i, p.strategy)));
      const prof = (await t.call('GET', `/v1/profile/${p.id}`, { key })).body.data;
      expect(prof.baseVersionId, label).toBe(v3.id);
      const state = (await t.call('GET', `/v1/state/${prof.headStateId}`, { key })).body.data;
      const want = expected(p.k, p.i, p.strategy);
      expect(state, label).toMatchObject({ source: 'sync', baseVersionId: v3.id, treeHash: treeHash(want), fileCount: Object.keys(want).length });
      const conflicts = (await t.call('GET', `/v1/conflict/list?appId=${app.id}&profileId=${p.id}&pageSize=100`, { key })).body.data.items;
      expect(Object.fromEntries(conflicts.map((c: any) => [c.path, c.kind])), label).toEqual(expectedConflicts(p.k, p.strategy));
      for (const c of conflicts) {
        expect(c.syncId).toBe(syncs[p.strategy]);
        expect(c.strategy).toBe(p.strategy);
        if (p.strategy === 'manual') expect(c).toMatchObject({ status: 'open', resolution: null, resultHash: null });
        else expect(c).toMatchObject({ status: 'resolved', resolution: p.strategy === 'incoming' ? 'incoming' : 'current' });
        if (c.kind === 'modify_delete') {
          // The profile deleted the file the app changed: keeping its side deletes it.
          expect(c.currentHash).toBeNull();
          if (p.strategy === 'incoming') expect(c.resultHash).toBe(c.incomingHash);
          else expect(c.resultHash).toBeNull();
        }
      }
    }

    // A second sync finds everyone on the head: unchanged, no new state.
    const again = await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id } });
    const done = await waitSync(again.body.data.syncId);
    expect(done).toMatchObject({ strategy: 'smart', total: 50, processed: 50, updated: 0, unchanged: 50, conflicted: 0, failed: 0 });

    // Rollback to v1 and sync: profiles move back, keeping their own files.
    await t.call('POST', '/v1/version/rollback', { key, body: { appId: app.id, toVersionId: v1.id } });
    const back = await waitSync((await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id, strategy: 'incoming' } })).body.data.syncId);
    expect(back).toMatchObject({ total: 50, updated: 50, processed: 50 });
    const own = profiles.find((p) => p.k === 1)!;
    expect(await filesOf(own.id)).toEqual(asBuffers({ ...V1, [`memory/user-${own.i}.md`]: `memory of ${own.i}\n` }));
    const plain = profiles.find((p) => p.k === 0)!;
    expect(await filesOf(plain.id)).toEqual(asBuffers(V1));
  });

  it('a state upload resolves the open manual conflicts of its profile', async () => {
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'sync-manual', type: 'claude' } })).body.data;
    await deploy(t, key, app.id, V1);
    const p = (await t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier: 'm' } })).body.data;
    await commit(t, key, p.id, EDITS[3](0));
    await deploy(t, key, app.id, V2);
    const sync = await waitSync((await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id, strategy: 'manual' } })).body.data.syncId);
    expect(sync).toMatchObject({ conflicted: 1, updated: 1 });
    const open = await t.call('GET', `/v1/conflict/list?appId=${app.id}&status=open`, { key });
    expect(open.body.data.total).toBe(2);
    expect((await commit(t, key, p.id, V2)).status).toBe(200);
    const after = (await t.call('GET', `/v1/conflict/list?appId=${app.id}&syncId=${sync.id}`, { key })).body.data.items;
    expect(after.map((c: any) => [c.status, c.resolution])).toEqual([
      ['resolved', 'manual'],
      ['resolved', 'manual'],
    ]);
  });

  it('a file of the profile where the version has a folder, or the other way round: one side is kept, every path lost is a conflict', async () => {
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'sync-clash', type: 'claude' } })).body.data;
    await deploy(t, key, app.id, { 'CLAUDE.md': 'v1\n' });
    const mine = { 'CLAUDE.md': 'v1\n', 'notes/today.md': 'my notes\n', memory: 'my memory\n' };
    const profiles: Record<string, string> = {};
    for (const strategy of ['smart', 'manual', 'incoming']) {
      profiles[strategy] = (await t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier: `clash-${strategy}` } })).body.data.id;
      expect((await commit(t, key, profiles[strategy], mine)).status).toBe(200);
    }
    const theirs = { 'CLAUDE.md': 'v1\n', notes: 'app notes\n', 'memory/index.md': 'app memory\n' };
    await deploy(t, key, app.id, theirs);
    for (const strategy of ['smart', 'manual', 'incoming']) {
      const sync = (await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id, strategy, profileIds: [profiles[strategy]] } })).body.data;
      expect(await waitSync(sync.syncId)).toMatchObject({ status: 'completed', updated: 1, conflicted: 1, failed: 0 });
      const conflicts = (await t.call('GET', `/v1/conflict/list?appId=${app.id}&syncId=${sync.syncId}`, { key })).body.data.items;
      const byPath = Object.fromEntries(conflicts.map((c: any) => [c.path, [c.kind, c.status, c.resolution, c.currentHash !== null, c.incomingHash !== null, c.resultHash]]));
      if (strategy === 'incoming') {
        expect(await filesOf(profiles[strategy])).toEqual(asBuffers(theirs));
        expect(byPath).toEqual({ 'notes/today.md': ['add_add', 'resolved', 'incoming', true, false, null], memory: ['add_add', 'resolved', 'incoming', true, false, null] });
      } else {
        // The profile's files stay; the app's paths that no disk could hold beside them do not.
        expect(await filesOf(profiles[strategy])).toEqual(asBuffers(mine));
        const [status, resolution] = strategy === 'manual' ? ['open', null] : ['resolved', 'current'];
        expect(byPath).toEqual({ notes: ['add_add', status, resolution, false, true, null], 'memory/index.md': ['add_add', status, resolution, false, true, null] });
      }
    }
  });

  it('every sync requested runs, one after another, also those requested while another finishes', async () => {
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'sync-burst', type: 'claude' } })).body.data;
    await deploy(t, key, app.id, V1);
    for (let i = 0; i < 3; i++) await t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier: `burst-${i}` } });
    // Requests spread over varying gaps (load, not synchronisation: every assertion below
    // holds whatever the timing), so some arrive just as the sync before them finishes.
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) {
      const res = await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id } });
      expect(res.status).toBe(200);
      ids.push(res.body.data.syncId);
      await new Promise((resolve) => setTimeout(resolve, (i * 7) % 40));
    }
    const done = [];
    for (const id of ids) done.push(await waitSync(id));
    expect(done.map((s) => s.status)).toEqual(ids.map(() => 'completed'));
    const byStart = [...done].sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt));
    for (let i = 1; i < byStart.length; i++) expect(Date.parse(byStart[i].startedAt)).toBeGreaterThanOrEqual(Date.parse(byStart[i - 1].completedAt));
  });

  it('refuses a sync without a head version, unknown profiles and bad strategies, queuing nothing', async () => {
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'sync-empty', type: 'claude' } })).body.data;
    const none = await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id } });
    expect(none.status).toBe(409);
    expect(none.body.code).toBe('no_head_version');
    await deploy(t, key, app.id, V1);
    expect((await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id, profileIds: ['prof-nope'] } })).status).toBe(404);
    expect((await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id, profileIds: [] } })).status).toBe(400);
    expect((await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id, strategy: 'ours' } })).status).toBe(400);
    const other = await t.org();
    expect((await t.call('POST', '/v1/version/sync', { key: other.key, body: { appId: app.id } })).status).toBe(404);
    const list = await t.call('GET', `/v1/sync/list?appId=${app.id}`, { key });
    expect(list.body.data.total).toBe(0);
  });
});
