import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectStray } from '../../src/core/gc.js';
import { saveBlobs, saveTree } from '../../src/core/trees.js';
import { claimStoreCheck } from '../../src/jobs/maintenance.js';
import type { LocalBlobStore } from '../../src/storage/blobs/local.js';
import { TEST_DB_KIND } from '../helpers/databases.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { deploy, download, hex, type Bundle } from './bundle.js';

// The daily store check: what nothing references goes, what anything references stays.

let t: TestServer;
let key: string;
beforeAll(async () => {
  // No maintenance tick during the tests: these call the check and its claim themselves.
  t = await startTestServer({ listen: true, config: { maintenanceIntervalSeconds: 3600 } });
  key = (await t.org()).key;
});
afterAll(async () => t?.close());

const store = () => t.ctx.blobs as LocalBlobStore;
const DAY = 24 * 60 * 60 * 1000;
const rowOf = (hash: string) => t.ctx.db.selectFrom('blobs').select('hash').where('hash', '=', hash).executeTakeFirst();

describe('the store check', () => {
  it('removes stored content no row accounts for and rows nothing references, and keeps every file of a version', async () => {
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'checked', type: 'openclaw' } })).body.data.id as string;
    // Stray content in a pack next to content a version then uses (the version's upload finds
    // it packed and does not store it again), as a complete that failed after promoting
    // leaves it; and a stray file of its own.
    const [strayPacked, shared, strayFile, strayRowBytes] = [randomBytes(3000), randomBytes(5000), randomBytes(700), randomBytes(900)];
    const pack = await store().openPack('stage_failed');
    pack.add(0, hex(strayPacked), strayPacked);
    pack.add(1, hex(shared), shared);
    await pack.finish();
    await store().promoteStaged('stage_failed', 0, hex(strayPacked));
    await store().discardStage('stage_failed');
    await store().put(hex(strayFile), strayFile);
    const files: Bundle = { 'AGENTS.md': '# checked', 'shared.bin': shared, 'big.bin': randomBytes(200_000) };
    const version = await deploy(t, key, appId, files, { batch: true });
    // A row nothing references (with its bytes), as a snapshot that lost its race leaves it.
    await t.ctx.db.transaction().execute(async (tx) => {
      await tx.insertInto('blobs').values({ hash: hex(strayRowBytes), size: strayRowBytes.length, data: null }).execute();
      await store().put(hex(strayRowBytes), strayRowBytes);
    });
    const stored = async () => new Set((await store().list()).keys());
    expect(await stored()).toEqual(new Set([strayPacked, shared, strayFile, strayRowBytes, files['AGENTS.md'], files['big.bin']].map(hex)));

    // Nothing is a day old yet: nothing goes.
    expect(await collectStray(t.ctx)).toEqual({ rows: 0, files: 0 });
    expect((await stored()).size).toBe(6);

    // A day on (the row's creation moved back; files count as old with no minimum age).
    await sql`update blobs set created_at = created_at - interval '2 days' where hash = ${hex(strayRowBytes)}`.execute(t.ctx.db);
    // A worker shutting down stops the check before it removes anything more.
    expect(await collectStray(t.ctx, { minAge: 0, signal: AbortSignal.abort() })).toEqual({ rows: 0, files: 0 });
    expect((await stored()).size).toBe(6);
    expect(await collectStray(t.ctx, { minAge: 0 })).toEqual({ rows: 1, files: 2 });
    expect(await stored()).toEqual(new Set([shared, files['AGENTS.md'], files['big.bin']].map(hex)));
    expect(await rowOf(hex(strayRowBytes))).toBeUndefined();
    expect(await rowOf(hex(strayPacked))).toBeUndefined(); // its claim is gone with it
    const dl = (await t.call('GET', `/v1/version/download/${version.id}`, { key })).body.data.url as string;
    const back = await download(dl);
    for (const [name, data] of Object.entries(files)) expect(back[name].equals(Buffer.from(data)), name).toBe(true);
    expect(await store().read(hex(shared))).toEqual(shared);

    // A second check finds nothing more, and the version's rows are all there.
    expect(await collectStray(t.ctx, { minAge: 0 })).toEqual({ rows: 0, files: 0 });
    for (const data of Object.values(files)) expect(await rowOf(hex(data))).toBeDefined();
  });

  it('runs once a day, on one worker', async () => {
    await t.ctx.db.deleteFrom('settings').where('key', '=', 'store-checked-at').execute();
    const realNow = t.ctx.now;
    try {
      expect(await claimStoreCheck(t.ctx)).toBe(true);
      expect(await claimStoreCheck(t.ctx)).toBe(false); // another worker, or a restart
      t.ctx.now = () => new Date(Date.now() + DAY / 2);
      expect(await claimStoreCheck(t.ctx)).toBe(false);
      t.ctx.now = () => new Date(Date.now() + DAY + 1000);
      expect(await claimStoreCheck(t.ctx)).toBe(true);
      expect(await claimStoreCheck(t.ctx)).toBe(false);
    } finally {
      t.ctx.now = realNow;
    }
  });
});

describe.runIf(TEST_DB_KIND === 'postgres')('the store check beside a commit', () => {
  it('waits for a commit that registers stray content, then leaves that content be', async () => {
    const bytes = randomBytes(1234);
    await store().put(hex(bytes), bytes); // stored, no row: stray, until the commit below
    let rowWritten!: () => void;
    const written = new Promise<void>((resolve) => (rowWritten = resolve));
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const commit = t.ctx.db.transaction().execute(async (tx) => {
      await saveBlobs(tx, t.ctx.blobs, [{ hash: hex(bytes), size: bytes.length }]);
      rowWritten();
      await held; // the commit's row is written and locked, its tree not yet
      await saveTree(tx, [{ path: 'kept.bin', hash: hex(bytes), size: bytes.length }]);
    });
    await written;
    const check = collectStray(t.ctx, { minAge: 0 });
    const waitingForLock = async () => {
      const r = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`.execute(t.ctx.db);
      return r.rows[0].n > 0;
    };
    try {
      await eventually(waitingForLock, 'the store check to wait for the commit');
    } finally {
      release(); // also when the check did not wait: the commit must not hold the database
    }
    await commit;
    expect(await check).toEqual({ rows: 0, files: 0 });
    expect(await store().read(hex(bytes))).toEqual(bytes);
    expect(await rowOf(hex(bytes))).toBeDefined();
  });
});
