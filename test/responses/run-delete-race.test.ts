import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../files/bundle.js';
import { TEST_DB_KIND } from '../helpers/databases.js';
import { lockWaited, startTestServer, type TestServer } from '../helpers/server.js';

// Two transactions at once on one profile need PostgreSQL: PGlite runs one at a time.
describe.runIf(TEST_DB_KIND === 'postgres')('a run racing the deletion of its profile', () => {
  let t: TestServer;
  let key: string;
  beforeAll(async () => {
    t = await startTestServer({ listen: true });
    key = (await t.org()).key;
  });
  afterAll(async () => t?.close());

  it('lands on a new profile once the deletion commits, never on the deleted one', async () => {
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'race-delete', type: 'claude' } })).body.data.id;
    await deploy(t, key, appId, { 'CLAUDE.md': '# hi\n' });
    const channelId = (await t.call('POST', '/v1/channel/create', { key, body: { appId, slug: 'api', type: 'api' } })).body.data.id;
    const old = (await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier: 'uma' } })).body.data;

    // The deletion's transaction, held open: the profile row is locked and marked deleting.
    let commit!: () => void;
    const held = new Promise<void>((resolve) => (commit = resolve));
    let marked!: () => void;
    const isMarked = new Promise<void>((resolve) => (marked = resolve));
    const deletion = t.ctx.db.transaction().execute(async (tx) => {
      await tx.updateTable('profiles').set({ status: 'deleting' }).where('id', '=', old.id).execute();
      marked();
      await held;
    });
    await isMarked;
    // The run still finds the profile active (the deletion has not committed) ...
    const run = t.call('POST', '/v1/response/run', { key, body: { appId, channelId, userId: 'uma', input: 'hi' } });
    await lockWaited(t, 'the run to wait on the profile');
    commit();
    await deletion;
    // ... and once the deletion commits, it takes the user's new profile instead.
    const reply = await run;
    expect(reply.status).toBe(200);
    expect(reply.body.data.profileId).not.toBe(old.id);
    expect(await t.ctx.db.selectFrom('instances').select('id').where('profileId', '=', old.id).execute()).toEqual([]);
  });
});
