import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { start } from '../../src/start.js';
import { databaseUrl, TEST_DB_KIND, TEST_PG_URL } from '../helpers/databases.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';

// Workers poll every few seconds; a job sent in a transaction wakes them when it commits.

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => t?.close());

describe('job queue', () => {
  it('signals a sent job once its transaction commits, never for one rolled back', async () => {
    const seen: string[] = [];
    const off = t.ctx.events.on('jobs', (name) => seen.push(name));
    const wake = vi.spyOn(t.ctx.queue, 'wake');
    try {
      await t.ctx.db
        .transaction()
        .execute(async (tx) => {
          await t.ctx.queue.send('materialize-snapshot', { organizationId: 'org_none', stateId: 'state_none', source: {} }, { tx });
          throw new Error('roll back');
        })
        .catch(() => undefined);
      await t.ctx.db.transaction().execute(async (tx) => {
        await t.ctx.queue.send('delete-profile', { profileId: 'profile_none' }, { tx });
        expect(seen).toEqual([]); // not before the commit
      });
      // Signals arrive in commit order: once the second is here, the first would have been too.
      await eventually(async () => seen.length > 0, 'the signal of the committed job');
      expect(seen).toEqual(['delete-profile']);
      // registerWorkers turns it into a wake-up of this process's workers of that name.
      expect(wake.mock.calls).toEqual([['delete-profile']]);
    } finally {
      off();
      wake.mockRestore();
    }
  });

  it('does not signal a job scheduled for later: its workers in the sending process are woken when it is due', async () => {
    const seen: string[] = [];
    const off = t.ctx.events.on('jobs', (name) => seen.push(name));
    try {
      await t.ctx.queue.send('deliver-webhook', { deliveryId: 'delivery_none', attempt: 2 }, { startAfter: new Date(Date.now() + 3_600_000) });
      await t.ctx.queue.send('delete-app', { appId: 'app_none' });
      await eventually(async () => seen.length > 0, 'the signal of the job sent without a transaction');
      expect(seen).toEqual(['delete-app']);
    } finally {
      off();
    }
  });

  it('runs a scheduled job when it is due, not at the next poll', async () => {
    const api = await startTestServer({ role: 'api' });
    try {
      const ran: number[] = [];
      await api.ctx.queue.work('deliver-webhook', async () => void ran.push(Date.now()), { pollingIntervalSeconds: 3600 });
      const due = Date.now() + 300;
      await api.ctx.queue.send('deliver-webhook', { deliveryId: 'delivery_none', attempt: 2 }, { startAfter: new Date(due) });
      await eventually(async () => ran.length === 1, 'the scheduled job to run');
      expect(ran[0]).toBeGreaterThanOrEqual(due);
    } finally {
      await api.close();
    }
  });

  it('lets a woken worker take every waiting job, not one per polling interval', async () => {
    // Its own process without workers, and a worker whose polling never comes round in a test:
    // each job after the first is only taken if the worker looks again once it has done one.
    const api = await startTestServer({ role: 'api' });
    try {
      const done: string[] = [];
      await api.ctx.queue.work('delete-profile', async (d) => void done.push(String(d.profileId)), { pollingIntervalSeconds: 3600 });
      await api.ctx.db.transaction().execute(async (tx) => {
        for (const id of ['profile_1', 'profile_2', 'profile_3']) await api.ctx.queue.send('delete-profile', { profileId: id }, { tx });
      });
      api.ctx.queue.wake('delete-profile'); // what the commit's signal does in a worker process
      await eventually(async () => done.length === 3, 'all three jobs to be taken after one wake-up');
      expect(done.sort()).toEqual(['profile_1', 'profile_2', 'profile_3']);
    } finally {
      await api.close();
    }
  });

  it.runIf(TEST_DB_KIND === 'postgres')('lets several processes start at once on an empty PostgreSQL database', async () => {
    // Scale-out's first start: every process creates the schema and the job queues it finds missing.
    const name = `harnesslayer_t_${randomBytes(6).toString('hex')}`;
    const admin = async (sql: string) => {
      const c = new pg.Client({ connectionString: TEST_PG_URL });
      await c.connect();
      try {
        await c.query(sql);
      } finally {
        await c.end();
      }
    };
    await admin(`create database ${name}`);
    const dirs: string[] = [];
    try {
      const configs = await Promise.all(
        [1, 2, 3].map(async () => {
          const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-race-'));
          dirs.push(dataDir);
          return loadConfig({}, { dataDir, databaseUrl: databaseUrl(TEST_PG_URL!, name), secret: 'test-secret-0123456789', port: 0 });
        }),
      );
      const started = await Promise.allSettled(configs.map((c) => start(c, 'worker', { listen: false })));
      for (const s of started) if (s.status === 'fulfilled') await s.value.stop();
      expect(started.map((s) => (s.status === 'rejected' ? String(s.reason) : 'started'))).toEqual(['started', 'started', 'started']);
    } finally {
      await admin(`drop database if exists ${name} with (force)`);
      for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

// The embedded database belongs to one process: a job still active when it starts was held
// by a process that is gone (killed, or its machine lost power).
describe.runIf(TEST_DB_KIND === 'pglite')('a restart on the embedded database', () => {
  it('takes up at once the jobs the process before it held, instead of waiting out their 300 s lease', async () => {
    const before = await startTestServer({ role: 'api' }); // no workers: the job stays queued
    const { key } = await before.org();
    const appId = (await before.call('POST', '/v1/app/create', { key, body: { slug: 'restart', type: 'claude' } })).body.data.id;
    const profile = (await before.call('POST', '/v1/profile/create', { key, body: { appId, identifier: 'gone' } })).body.data;
    expect((await before.call('DELETE', `/v1/profile/${profile.id}`, { key })).status).toBe(200);
    // A worker took the deletion job and died with it: active, its lease running.
    const taken = await sql`update pgboss.job set state = 'active', started_on = now() where name = 'delete-profile' and state = 'created'`.execute(before.ctx.db);
    expect(Number(taken.numAffectedRows)).toBe(1);
    await before.close({ keepDatabase: true });

    const after = await startTestServer({ database: before.database });
    try {
      // Retried after the job's own retry delay, found by the next poll: seconds, not 300 s.
      await eventually(async () => (await after.call('GET', `/v1/profile/${profile.id}`, { key })).status === 404, 'the deletion to finish', 60_000);
    } finally {
      await after.close();
    }
  });
});
