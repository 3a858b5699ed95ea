import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_DB_KIND } from '../helpers/databases.js';
import { lockWaited, startTestServer, type TestServer } from '../helpers/server.js';

// Two transactions at once need PostgreSQL: PGlite runs one at a time.
describe.runIf(TEST_DB_KIND === 'postgres')('putting a profile in an access group that is being deleted', () => {
  let t: TestServer;
  let key: string;
  beforeAll(async () => {
    t = await startTestServer({ listen: true });
    key = (await t.org()).key;
  });
  afterAll(async () => t?.close());

  let apps = 0;
  async function appWithGroup() {
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: `race-group-${++apps}`, type: 'claude', limit: { amount: 1, interval: 'monthly' } } })).body.data;
    const group = (await t.call('POST', '/v1/access_group/create', { key, body: { appId: app.id, name: 'gold', limit: 5, limitReset: 'daily' } })).body.data;
    return { app, group };
  }

  /**
   * The group's deletion, as its transaction does it (profiles moved, row deleted), held open
   * while `request` runs; committed once the request waits on it, or has answered.
   */
  async function whileDeleting<T>(app: { id: string; defaultAccessGroupId: string }, groupId: string, request: () => Promise<T>): Promise<T> {
    let commit!: () => void;
    const held = new Promise<void>((resolve) => (commit = resolve));
    let deleted!: () => void;
    const isDeleted = new Promise<void>((resolve) => (deleted = resolve));
    const deletion = t.ctx.db.transaction().execute(async (tx) => {
      await tx.updateTable('profiles').set({ accessGroupId: app.defaultAccessGroupId }).where('accessGroupId', '=', groupId).execute();
      await tx.deleteFrom('accessGroups').where('id', '=', groupId).execute();
      deleted();
      await held;
    });
    await isDeleted;
    const answer = request();
    await Promise.race([answer, lockWaited(t, 'the request to wait on the group')]);
    commit();
    await deletion;
    return answer;
  }

  it('a profile update waits for the deletion, then is refused: the profile stays where it was', async () => {
    const { app, group } = await appWithGroup();
    const p = (await t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier: 'u' } })).body.data;
    const res = await whileDeleting(app, group.id, () => t.call('PATCH', `/v1/profile/${p.id}`, { key, body: { accessGroupId: group.id } }));
    expect(res.status, JSON.stringify(res.body)).toBe(404);
    const after = (await t.call('GET', `/v1/profile/${p.id}`, { key })).body.data;
    expect(after.accessGroupId).toBe(app.defaultAccessGroupId);
    expect(after.usage).toMatchObject({ used: 0, limit: 1 });
  });

  it('a profile created in the group waits for the deletion, then is refused: nothing is created', async () => {
    const { app, group } = await appWithGroup();
    const res = await whileDeleting(app, group.id, () => t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier: 'v', accessGroupId: group.id } }));
    expect(res.status, JSON.stringify(res.body)).toBe(404);
    expect((await t.call('GET', `/v1/profile/v?appId=${app.id}`, { key })).status).toBe(404);
  });

  it('a deletion that waits for a profile update moves that profile to the default group', async () => {
    const { app, group } = await appWithGroup();
    const p = (await t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier: 'w' } })).body.data;
    // The update's transaction, held open with the group share-locked (as updateProfile holds it).
    let commit!: () => void;
    const held = new Promise<void>((resolve) => (commit = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const update = t.ctx.db.transaction().execute(async (tx) => {
      await tx.selectFrom('accessGroups').select('id').where('id', '=', group.id).forShare().execute();
      await tx.updateTable('profiles').set({ accessGroupId: group.id }).where('id', '=', p.id).execute();
      locked();
      await held;
    });
    await isLocked;
    const deletion = t.call('DELETE', `/v1/access_group/${group.id}`, { key });
    await lockWaited(t, 'the deletion to wait on the group');
    commit();
    await update;
    expect((await deletion).status).toBe(200);
    expect((await t.call('GET', `/v1/profile/${p.id}`, { key })).body.data.accessGroupId).toBe(app.defaultAccessGroupId);
  });
});
