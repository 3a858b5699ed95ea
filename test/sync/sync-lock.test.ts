import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commitState } from '../../src/core/states.js';
import { stateFiles, storeBlob } from '../../src/core/trees.js';
import { deploy } from '../files/bundle.js';
import { TEST_DB_KIND } from '../helpers/databases.js';
import { eventually, lockWaited, startTestServer, type TestServer } from '../helpers/server.js';

// Two transactions at once on one profile need PostgreSQL: PGlite runs one at a time.
describe.runIf(TEST_DB_KIND === 'postgres')('a sync whose batch waits on a profile a writer is committing', () => {
  let t: TestServer;
  let key: string;
  beforeAll(async () => {
    t = await startTestServer({ listen: true });
    key = (await t.org()).key;
  });
  afterAll(async () => t?.close());

  it("merges onto the writer's new head instead of failing the profile", async () => {
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'sync-lock', type: 'claude' } })).body.data;
    await deploy(t, key, app.id, { 'a.txt': 'a1\n' });
    const profile = (await t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier: 'writer' } })).body.data;
    const v2 = await deploy(t, key, app.id, { 'a.txt': 'a2\n', 'b.txt': 'b\n' });

    // A state upload's commit (as a run's): the profile's head moves, and the row stays locked
    // until the test lets the transaction commit.
    let commit!: () => void;
    const held = new Promise<void>((resolve) => (commit = resolve));
    let moved!: () => void;
    const headMoved = new Promise<void>((resolve) => (moved = resolve));
    const writer = t.ctx.db.transaction().execute(async (tx) => {
      const p = await tx.selectFrom('profiles').selectAll().where('id', '=', profile.id).executeTakeFirstOrThrow();
      const head = await tx.selectFrom('states').selectAll().where('id', '=', p.headStateId!).executeTakeFirstOrThrow();
      const mine = await storeBlob(t.ctx, tx, 'mine.txt', Buffer.from('precious\n'));
      const state = await commitState(t.ctx, tx, { organizationId: p.organizationId, profileId: p.id, files: [...(await stateFiles(tx, head)), mine], source: 'upload' });
      moved();
      await held;
      return state;
    });
    await headMoved;
    const sync = (await t.call('POST', '/v1/version/sync', { key, body: { appId: app.id } })).body.data;
    // The sync's batch now waits for the writer's row lock.
    await lockWaited(t, 'the sync to wait on the profile lock');
    commit();
    const written = await writer;

    const done = await eventually(async () => {
      const s = (await t.call('GET', `/v1/sync/${sync.syncId}`, { key })).body.data;
      return s.status === 'completed' && s;
    }, 'the sync to end');
    expect(done).toMatchObject({ total: 1, processed: 1, updated: 1, failed: 0 });
    const after = (await t.call('GET', `/v1/profile/${profile.id}`, { key })).body.data;
    expect(after.baseVersionId).toBe(v2.id);
    const head = (await t.call('GET', `/v1/state/${after.headStateId}`, { key })).body.data;
    expect(head).toMatchObject({ source: 'sync', parentStateId: written.id, number: written.number + 1 });
    expect(head.files.map((f: { name: string }) => f.name)).toEqual(['a.txt', 'b.txt', 'mine.txt']);
  });
});
