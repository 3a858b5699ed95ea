import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { materializeSnapshot, type SnapshotSource } from '../../src/core/snapshots.js';
import { Queue, JOBS } from '../../src/jobs/queue.js';
import { processSyncRange, startSync } from '../../src/sync/job.js';
import { deploy } from '../files/bundle.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';

// No workers: each job is run here, by hand, as the attempt the queue would say it is.
let t: TestServer;
let key: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true, role: 'api' });
  key = (await t.org()).key;
});
afterAll(async () => t?.close());

const jobData = async <T>(name: string, field: string, value: string) =>
  (await sql<{ data: T }>`select data from pgboss.job where name = ${name} and data->>${field} = ${value} order by created_on`.execute(t.ctx.db)).rows.map((r) => r.data);

describe('jobs whose earlier attempts all died end what they serve, instead of leaving it for good', () => {
  it('a snapshot on its fourth attempt fails its state, saying why; on its third it still runs', async () => {
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'snap-attempts', type: 'claude' } })).body.data.id;
    await deploy(t, key, appId, { 'CLAUDE.md': '# v1\n' });
    const profile = (await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier: 'sam' } })).body.data;
    const url = (await t.call('POST', `/v1/state/download/${profile.headStateId}`, { key })).body.data.url;
    const snapshot = async () => {
      const snap = (await t.call('POST', '/v1/state/snapshot', { key, body: { profileId: profile.id, storageUrl: url } })).body.data;
      const [data] = await jobData<{ organizationId: string; stateId: string; source: SnapshotSource }>('materialize-snapshot', 'stateId', snap.id);
      return { snap, data };
    };
    const given = await snapshot();
    await materializeSnapshot(t.ctx, { ...given.data, attempt: 4 });
    const failed = (await t.call('GET', `/v1/state/${given.snap.id}`, { key })).body.data;
    expect(failed).toMatchObject({ status: 'failed', error: expect.stringContaining('its worker stopped during each of 3 attempts') });

    const third = await snapshot();
    await materializeSnapshot(t.ctx, { ...third.data, attempt: 3 });
    expect((await t.call('GET', `/v1/state/${third.snap.id}`, { key })).body.data.status).toBe('ready');
  });

  it("a sync's range on its sixth attempt fails the profiles it has left, and the sync completes; a start fails the sync and starts the next", async () => {
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'sync-attempts', type: 'claude' } })).body.data.id;
    await deploy(t, key, appId, { 'CLAUDE.md': '# v1\n' });
    for (const identifier of ['ann', 'ben']) await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier } });
    await deploy(t, key, appId, { 'CLAUDE.md': '# v2\n' });
    const first = (await t.call('POST', '/v1/version/sync', { key, body: { appId } })).body.data.syncId;
    const second = (await t.call('POST', '/v1/version/sync', { key, body: { appId } })).body.data.syncId;

    await startSync(t.ctx, first);
    const [range] = await jobData<{ syncId: string; after: string | null; upto: string | null }>('sync-range', 'syncId', first);
    await processSyncRange(t.ctx, { ...range, attempt: 6 });
    const sync = (await t.call('GET', `/v1/sync/${first}`, { key })).body.data;
    expect(sync).toMatchObject({ status: 'completed', total: 2, processed: 2, failed: 2, updated: 0 });
    const items = await t.ctx.db.selectFrom('syncItems').select(['outcome', 'error']).where('syncId', '=', first).execute();
    expect(items.map((i) => i.error)).toEqual([expect.stringContaining('5 times'), expect.stringContaining('5 times')]);

    // The next sync was started by the first one's end; its start job gives up.
    const [start] = await jobData<{ syncId: string }>('sync-start', 'syncId', second);
    expect(start).toBeDefined();
    await startSync(t.ctx, second, 6);
    expect((await t.call('GET', `/v1/sync/${second}`, { key })).body.data.status).toBe('failed');
  });

  it('a queue made by an earlier release takes the catalog retry options at start', async () => {
    await t.ctx.queue.boss.updateQueue('materialize-snapshot', { name: 'materialize-snapshot', retryLimit: 1 });
    expect((await t.ctx.queue.boss.getQueue('materialize-snapshot'))!.retryLimit).toBe(1);
    const again = new Queue(t.ctx.database);
    await again.start();
    try {
      expect((await again.boss.getQueue('materialize-snapshot'))!.retryLimit).toBe(JOBS['materialize-snapshot'].retryLimit);
    } finally {
      await again.stop();
    }
  });
});

describe('a deletion whose attempts so far all failed', () => {
  it('is never given up: a worker sends it again as a new job an hour later', async () => {
    const w = await startTestServer({ config: { maintenanceIntervalSeconds: 3600 } }); // runs workers
    try {
      const { key: k } = await w.org();
      const app = (await w.call('POST', '/v1/app/create', { key: k, body: { slug: 'hard-to-delete', type: 'claude' } })).body.data;
      // The deletion job as the queue holds it after five attempts that died: run again now.
      await w.ctx.db.updateTable('apps').set({ status: 'deleting' }).where('id', '=', app.id).execute();
      const id = await w.ctx.queue.boss.send('delete-app', { appId: app.id }, { startAfter: new Date(Date.now() + 60_000) });
      await sql`update pgboss.job set state = 'retry', retry_count = 5, started_on = now(), start_after = now() where id = ${id}`.execute(w.ctx.db);
      w.ctx.queue.wake('delete-app');
      const later = await eventually(async () => {
        const rows = (await sql<{ startAfter: Date }>`select start_after from pgboss.job where name = 'delete-app' and data->>'appId' = ${app.id} and id <> ${id}`.execute(w.ctx.db)).rows;
        return rows[0];
      }, 'the deletion to be sent again');
      expect(new Date(later.startAfter).getTime() - Date.now()).toBeGreaterThan(50 * 60_000);
      expect((await w.call('GET', `/v1/app/${app.id}`, { key: k })).body.data.status).toBe('deleting');
    } finally {
      await w.close();
    }
  });
});
