import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { materializeSnapshot, type SnapshotSource } from '../../src/core/snapshots.js';
import { commit, deploy, unzip } from './bundle.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

// A snapshot is a compare-and-set against the head its request saw. The server runs no
// workers, so the test moves the head while the snapshot waits, then runs its job itself.

let t: TestServer;
let key: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true, role: 'api' });
  key = (await t.org()).key;
});
afterAll(async () => t?.close());

async function filesOfState(stateId: string): Promise<Record<string, string>> {
  const url = (await t.call('POST', `/v1/state/download/${stateId}`, { key })).body.data.url;
  const zip = await unzip(Buffer.from(await (await fetch(url)).arrayBuffer()));
  return Object.fromEntries(Object.entries(zip).map(([k, v]) => [k, v.toString()]));
}

describe('a snapshot whose profile moved on meanwhile', () => {
  it('is merged onto the head now: what the snapshot restores, and what was written since, both stay', async () => {
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'snap-race', type: 'claude' } })).body.data.id;
    const v1 = await deploy(t, key, appId, { 'CLAUDE.md': '# v1\n', 'notes.md': 'one\n' });
    const profile = (await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier: 'racer' } })).body.data;
    const restorePoint = profile.headStateId;
    const edited = (await commit(t, key, profile.id, { 'CLAUDE.md': '# v1\n', 'notes.md': 'two\n' })).body.data;

    // Restore the first state: its archive is a download URL of this server.
    const url = (await t.call('POST', `/v1/state/download/${restorePoint}`, { key })).body.data.url;
    const snap = (await t.call('POST', '/v1/state/snapshot', { key, body: { profileId: profile.id, storageUrl: url } })).body.data;
    expect(snap).toMatchObject({ status: 'materializing', parentStateId: edited.id });

    // Meanwhile the user stores a file: the head moves past the snapshot's parent.
    const moved = await commit(t, key, profile.id, { 'CLAUDE.md': '# v1\n', 'notes.md': 'two\n', 'precious.md': 'keep me\n' });
    expect(moved.status).toBe(200);

    const job = await sql<{ data: { organizationId: string; stateId: string; source: SnapshotSource } }>`
      select data from pgboss.job where name = 'materialize-snapshot' and data->>'stateId' = ${snap.id}`.execute(t.ctx.db);
    await materializeSnapshot(t.ctx, job.rows[0].data);

    const head = (await t.call('GET', `/v1/profile/${profile.id}`, { key })).body.data;
    expect(head.headStateId).toBe(snap.id);
    expect(head.baseVersionId).toBe(v1.id);
    // The restore took notes.md back to "one"; the upload's precious.md stays.
    expect(await filesOfState(snap.id)).toEqual({ 'CLAUDE.md': '# v1\n', 'notes.md': 'one\n', 'precious.md': 'keep me\n' });
    expect((await t.call('GET', `/v1/state/${snap.id}`, { key })).body.data).toMatchObject({ status: 'ready', isHead: true, fileCount: 3 });
  });
});
