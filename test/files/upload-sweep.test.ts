import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { declare, put, putBatch, tarball } from './bundle.js';

// Abandoned uploads go after 24 h with their staged files, also when no new upload comes;
// idempotency keys go after their 24 h too.

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ listen: true, config: { maintenanceIntervalSeconds: 1 } });
});
afterAll(async () => t?.close());

describe('expired uploads', () => {
  it('are removed with their staged files by the workers, without a new upload', async () => {
    const { key } = await t.org();
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'abandoned', type: 'openclaw' } })).body.data.id;
    const files = { 'AGENTS.md': 'never completed' };
    const up = (await t.call('POST', '/v1/version/upload', { key, body: { appId, files: declare(files) } })).body.data;
    expect((await put(up.uploadUrls[0], files['AGENTS.md'])).status).toBe(200);
    const staged = path.join(t.config.storage.slice('file:'.length), 'uploads', up.uploadId);
    expect((await fs.readdir(staged)).length).toBe(1);
    const row = () => t.ctx.db.selectFrom('uploads').select('id').where('id', '=', up.uploadId).executeTakeFirst();
    expect(await row()).toBeDefined();

    const realNow = t.ctx.now;
    t.ctx.now = () => new Date(Date.now() + 25 * 60 * 60 * 1000);
    try {
      await eventually(async () => !(await row()), 'the upload to be swept');
    } finally {
      t.ctx.now = realNow;
    }
    await expect(fs.access(staged)).rejects.toThrow();
    const done = await t.call('POST', `/v1/version/upload/${up.uploadId}/complete`, { key, body: { appId, versionId: up.versionId } });
    expect(done.status).toBe(404);
    // Its URLs, still signed and unexpired, find no upload to stage into.
    const late = await putBatch(up.batchUrl, await tarball([{ name: 'AGENTS.md', data: files['AGENTS.md'] }]));
    expect(late.status).toBe(404);
    expect(((await late.json()) as { error: string }).error).toMatch(/upload/);
    expect((await put(up.uploadUrls[0], files['AGENTS.md'])).status).toBe(404);
    await expect(fs.access(staged)).rejects.toThrow();
  });
});

describe('expired idempotency keys', () => {
  it('are removed by the workers; keys within their 24 h stay', async () => {
    const { key } = await t.org();
    const create = (slug: string) => t.call('POST', '/v1/app/create', { key, body: { slug, type: 'openclaw' }, headers: { 'Idempotency-Key': `sweep-${slug}` } });
    expect((await create('kept-a')).status).toBe(200);
    expect((await create('kept-b')).status).toBe(200);
    const keys = async () => (await t.ctx.db.selectFrom('idempotencyKeys').select('idempotencyKey').where('idempotencyKey', 'like', 'sweep-%').execute()).map((k) => k.idempotencyKey).sort();
    expect(await keys()).toEqual(['sweep-kept-a', 'sweep-kept-b']);
    await t.ctx.db.updateTable('idempotencyKeys').set({ createdAt: new Date(Date.now() - 25 * 60 * 60 * 1000) }).where('idempotencyKey', '=', 'sweep-kept-a').execute();
    await eventually(async () => (await keys()).length === 1, 'the expired key to be swept');
    expect(await keys()).toEqual(['sweep-kept-b']);
  });
});
