import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBlob, stateFiles } from '../../src/core/trees.js';
import { deploy } from '../files/bundle.js';
import { TEST_DB_KIND } from '../helpers/databases.js';
import { seedProfiles } from '../helpers/seed.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';

// Worker processes share one database: this needs PostgreSQL (the PGlite pass of the suite
// covers the same job in one process, in sync.test.ts).
describe.runIf(TEST_DB_KIND === 'postgres')('a sync survives its worker being killed', () => {
  let t: TestServer;
  const workers: ChildProcess[] = [];
  beforeAll(async () => {
    // The API process runs no workers: the sync runs only in the child processes below.
    t = await startTestServer({ listen: true, role: 'api', config: { jobLeaseSeconds: 3, maintenanceIntervalSeconds: 1 } });
  });
  afterAll(async () => {
    for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
    await t?.close();
  });

  function startWorker(): ChildProcess {
    const child = spawn(process.execPath, [path.resolve('bin/harnesslayer.mjs'), 'serve', '--role', 'worker'], {
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        DATABASE_URL: t.database.databaseUrl,
        HARNESSLAYER_DATA_DIR: t.database.dataDir,
        HARNESSLAYER_STORAGE: t.config.storage,
        HARNESSLAYER_SECRET: t.config.secret,
        HARNESSLAYER_JOB_LEASE_SECONDS: '3',
        HARNESSLAYER_MAINTENANCE_SECONDS: '1',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    workers.push(child);
    return child;
  }

  it('kills the worker mid-way through 20,000 profiles; another finishes, each profile merged once', async () => {
    const org = await t.org();
    const app = (await t.call('POST', '/v1/app/create', { key: org.key, body: { slug: 'big', type: 'claude' } })).body.data;
    const claude = (n: number) => Array.from({ length: 40 }, (_, i) => (i === n ? `edited line ${i}\n` : `line ${i}\n`)).join('');
    const v1 = await deploy(t, org.key, app.id, { 'CLAUDE.md': claude(-1), 'skills/a.md': 'a\n' });
    const row = await t.ctx.db.selectFrom('apps').select(['id', 'organizationId', 'defaultAccessGroupId']).where('id', '=', app.id).executeTakeFirstOrThrow();
    await seedProfiles(t.ctx, { ...row, defaultAccessGroupId: row.defaultAccessGroupId! }, v1.id, {
      count: 20_000,
      editEvery: 10,
      editPath: 'CLAUDE.md',
      editContent: () => claude(2),
    });
    const v2 = await deploy(t, org.key, app.id, { 'CLAUDE.md': claude(30), 'skills/a.md': 'a\n' });

    const syncId = (await t.call('POST', '/v1/version/sync', { key: org.key, body: { appId: app.id } })).body.data.syncId;
    const first = startWorker();
    const progress = await eventually(async () => {
      const s = (await t.call('GET', `/v1/sync/${syncId}`, { key: org.key })).body.data;
      return s.processed > 0 ? s : undefined;
    }, 'the first batch', 60_000);
    expect(progress.status).toBe('running');
    first.kill('SIGKILL');
    await once(first, 'exit');
    const mid = (await t.call('GET', `/v1/sync/${syncId}`, { key: org.key })).body.data;
    expect(mid.processed).toBeLessThan(20_000);

    startWorker();
    const done = await eventually(async () => {
      const s = (await t.call('GET', `/v1/sync/${syncId}`, { key: org.key })).body.data;
      return s.status === 'completed' ? s : undefined;
    }, 'the sync to complete', 120_000);
    expect(done).toMatchObject({ total: 20_000, processed: 20_000, updated: 20_000, unchanged: 0, failed: 0, conflicted: 0, versionId: v2.id });

    // Exactly one sync state per profile, every head on it, every profile on v2.
    const perProfile = await sql<{ n: number; c: number }>`
      select count(*)::int as c, n from (
        select count(*)::int as n from states where app_id = ${app.id} and source = 'sync' group by profile_id
      ) x group by n`.execute(t.ctx.db);
    expect(perProfile.rows).toEqual([{ c: 20_000, n: 1 }]);
    const off = await t.ctx.db
      .selectFrom('profiles as p')
      .innerJoin('states as s', (j) => j.onRef('s.id', '=', 'p.headStateId').onRef('s.organizationId', '=', 'p.organizationId'))
      .select(sql<number>`count(*)::int`.as('n'))
      .where('p.appId', '=', app.id)
      .where((eb) => eb.or([eb('p.baseVersionId', '!=', v2.id), eb('s.source', '!=', 'sync'), eb('s.parentStateId', 'is', null)]))
      .executeTakeFirstOrThrow();
    expect(off.n).toBe(0);
    const pending = await t.ctx.db.selectFrom('syncItems').select(['outcome']).where('syncId', '=', syncId).where('outcome', 'is', null).execute();
    expect(pending).toEqual([]);
    // An edited profile merged cleanly (its line 2, the app's line 30) and kept its memory.
    const head = await t.ctx.db.selectFrom('profiles').select('headStateId').where('id', '=', 'prof-seed00000000').executeTakeFirstOrThrow();
    const state = await t.ctx.db.selectFrom('states').selectAll().where('id', '=', head.headStateId!).executeTakeFirstOrThrow();
    const files = new Map((await stateFiles(t.ctx.db, state)).map((f) => [f.path, f.hash]));
    const merged = await readBlob(t.ctx, files.get('CLAUDE.md')!);
    expect(merged.toString()).toBe(Array.from({ length: 40 }, (_, i) => (i === 2 || i === 30 ? `edited line ${i}\n` : `line ${i}\n`)).join(''));
    expect(files.has('memory/MEMORY.md')).toBe(true);
  });
});
