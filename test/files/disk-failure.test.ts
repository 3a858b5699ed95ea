import { randomBytes } from 'node:crypto';
import type * as nodeFs from 'node:fs';
import fsp from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { declare, put, putBatch, tarball, type Bundle } from './bundle.js';

/*
 * The disk failing under an upload: the PUT answers 503 `storage_unavailable` (not a 500, not
 * a 200), nothing the failed write held counts as stored, and once the disk is back the same
 * upload takes the files again and completes. The failures are injected where the store meets
 * the operating system: the `node:fs` calls of the pack writer, as a failing disk makes them fail.
 */
const fail = vi.hoisted(() => ({ flush: false, write: false, datasync: false, flushes: 0 }));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof nodeFs>();
  const errno = (code: string, syscall: string) => Object.assign(new Error(`${code}: simulated, ${syscall}`), { code, syscall });
  return {
    ...fs,
    default: fs,
    fdatasync: (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => {
      fail.flushes++;
      if (fail.flush) setImmediate(() => callback(errno('EIO', 'fdatasync')));
      else fs.fdatasync(fd, callback);
    },
    writeSync: (...args: Parameters<typeof fs.writeSync>) => {
      if (fail.write) throw errno('ENOSPC', 'write');
      return fs.writeSync(...args);
    },
  };
});

let t: TestServer;
beforeAll(async () => {
  // A file's own flush (durable.ts's syncFile) goes through a `node:fs/promises` handle.
  const open = fsp.open.bind(fsp);
  vi.spyOn(fsp, 'open').mockImplementation(async (...args: Parameters<typeof fsp.open>) => {
    const handle = await open(...args);
    const datasync = handle.datasync.bind(handle);
    handle.datasync = () => (fail.datasync ? Promise.reject(Object.assign(new Error('EIO: simulated, fdatasync'), { code: 'EIO', syscall: 'fdatasync' })) : datasync());
    return handle;
  });
  t = await startTestServer({ listen: true });
});
afterAll(async () => {
  vi.restoreAllMocks();
  await t?.close();
});

async function openUpload(key: string, appId: string, files: Bundle) {
  const up = await t.call('POST', '/v1/version/upload', { key, body: { appId, files: declare(files) } });
  expect(up.status).toBe(200);
  return up.body.data as { uploadId: string; versionId: string; uploadUrls: Parameters<typeof put>[0][]; batchUrl: Parameters<typeof putBatch>[0] };
}

const complete = (key: string, appId: string, up: { uploadId: string; versionId: string }) =>
  t.call('POST', `/v1/version/upload/${up.uploadId}/complete`, { key, body: { appId, versionId: up.versionId } });

describe('a failing disk under an upload', () => {
  it('a batch whose background flush fails answers 503, stores none of it, and the same upload completes once the disk is back', async () => {
    const { key } = await t.org();
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'flaky-flush', type: 'openclaw' } })).body.data.id;
    // Over 4 MiB in one batch: the pack flushes in the background while the batch streams.
    const files: Bundle = { 'AGENTS.md': 'agent', 'data/big.bin': randomBytes(6 * 1024 * 1024), 'data/small.bin': randomBytes(1000) };
    const up = await openUpload(key, appId, files);
    const entries = () => Object.entries(files).map(([name, data]) => ({ name, data }));

    fail.flush = true;
    const flushesBefore = fail.flushes;
    let res: Response;
    try {
      res = await putBatch(up.batchUrl, await tarball(entries()));
    } finally {
      fail.flush = false;
    }
    expect(fail.flushes).toBeGreaterThan(flushesBefore); // the early flush did run, and failed
    expect(res.status).toBe(503);
    const failed = (await res.json()) as { success: boolean; code: string; error: string };
    expect(failed).toMatchObject({ success: false, code: 'storage_unavailable' });
    expect(failed.error).toMatch(/EIO/);
    expect(failed.error).toMatch(/Try again/);

    // The pack never got its index: none of its files counts as sent, and no version exists.
    const early = await complete(key, appId, up);
    expect(early.status).toBe(400);
    expect(early.body.error).toMatch(/AGENTS\.md/);
    const versions = await t.call('GET', `/v1/version/list?appId=${appId}`, { key });
    expect(versions.body.data.total).toBe(0);

    expect((await putBatch(up.batchUrl, await tarball(entries()))).status).toBe(200);
    const done = await complete(key, appId, up);
    expect(done.status).toBe(200);
    expect(done.body.data).toMatchObject({ number: 1, fileCount: 3 });
  });

  it('a full disk under a batch, or a failed flush under a single PUT, answers 503 and stages nothing; both are sent again', async () => {
    const { key } = await t.org();
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'full-disk', type: 'openclaw' } })).body.data.id;
    const files: Bundle = { 'AGENTS.md': 'agent', 'notes.md': 'notes' };
    const up = await openUpload(key, appId, files);

    fail.write = true;
    let res: Response;
    try {
      res = await putBatch(up.batchUrl, await tarball([{ name: 'AGENTS.md', data: files['AGENTS.md'] }]));
    } finally {
      fail.write = false;
    }
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: string }).error).toMatch(/ENOSPC: no space left/);
    const missing = await complete(key, appId, up);
    expect(missing.status).toBe(400);
    expect(missing.body.error).toMatch(/AGENTS\.md/);

    // A file's own URL: its temp file's flush fails; the PUT answers 503 and stages nothing.
    fail.datasync = true;
    let single: Response;
    try {
      single = await put(up.uploadUrls.find((u) => u.name === 'notes.md')!, files['notes.md']);
    } finally {
      fail.datasync = false;
    }
    expect(single.status).toBe(503);
    expect(((await single.json()) as { error: string }).error).toMatch(/EIO/);
    const stillMissing = await complete(key, appId, up);
    expect(stillMissing.status).toBe(400);
    expect(stillMissing.body.error).toMatch(/notes\.md/);

    expect((await put(up.uploadUrls.find((u) => u.name === 'notes.md')!, files['notes.md'])).status).toBe(200);
    expect((await putBatch(up.batchUrl, await tarball([{ name: 'AGENTS.md', data: files['AGENTS.md'] }]))).status).toBe(200);
    const done = await complete(key, appId, up);
    expect(done.status).toBe(200);
    expect(done.body.data.fileCount).toBe(2);
  });
});
