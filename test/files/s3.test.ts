import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import yazl from 'yazl';
import { ConfigError, loadConfig } from '../../src/config.js';
import { collectStray } from '../../src/core/gc.js';
import { materialize } from '../../src/runtime/workspace.js';
import { HarnesslayerClient } from '../../src/sdk/client.js';
import { deployFolder } from '../../src/sdk/deploy.js';
import { openBlobStore } from '../../src/storage/blobs/index.js';
import type { S3BlobStore } from '../../src/storage/blobs/s3.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { asStrings, commit, declare, deploy, download, hex, put, putAll, ref, tarGz, treeHash, type Bundle } from './bundle.js';

// The same flows on the S3 driver, against s3rver (a fake S3 on loopback, path-style).
// s3rver checks neither signatures nor checksums: the hash checks here are our own.

interface FakeS3 {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}

let t: TestServer;
let s3: FakeS3;
let s3Port: number;
let s3Dir: string;
let key: string;
const BUCKET = 'harnesslayer';

beforeAll(async () => {
  s3Dir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-s3rver-'));
  const S3rver = (await import('s3rver')).default as new (opts: object) => FakeS3;
  s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: s3Dir, configureBuckets: [{ name: BUCKET }] });
  const { port } = await s3.run();
  s3Port = port;
  // The SDK's default credential chain reads these (this file runs in its own process).
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  t = await startTestServer({ listen: true });
  // loadConfig takes no `s3` override, so open the S3 store from the same factory the
  // server uses and put it in the context (routes and workers read ctx.blobs per call).
  const local = t.ctx.blobs;
  t.ctx.blobs = await openBlobStore(
    { ...t.config, storage: `s3://${BUCKET}/deploy/blobs`, s3: { endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1' } },
    t.ctx.secrets,
  );
  await local.close();
  key = (await t.org()).key;
});
afterAll(async () => {
  await t?.close();
  await s3?.close().catch(() => {}); // the last test closed it already
  await fs.rm(s3Dir, { recursive: true, force: true });
});

async function keys(prefix: string): Promise<string[]> {
  const store = t.ctx.blobs as S3BlobStore;
  const res = await store.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `deploy/blobs/${prefix}` }));
  return (res.Contents ?? []).map((o) => o.Key!);
}

let n = 0;
const createApp = async (type: 'claude' | 'openclaw' = 'claude') => (await t.call('POST', '/v1/app/create', { key, body: { slug: `s3-${++n}`, type } })).body.data.id as string;

describe('S3 driver', () => {
  it('refuses at start a bucket that does not exist, naming it, and an empty bucket name', async () => {
    const config = { ...t.config, storage: 's3://no-such-bucket/p', s3: { endpoint: `http://127.0.0.1:${s3Port}`, region: 'us-east-1' } };
    await expect(openBlobStore(config, t.ctx.secrets)).rejects.toThrow(new ConfigError('HARNESSLAYER_STORAGE names the S3 bucket "no-such-bucket", which cannot be used (it does not exist). Check the bucket name, S3_ENDPOINT, S3_REGION and the AWS credentials.'));
    for (const storage of ['s3://', 's3:///prefix']) {
      expect(() => loadConfig({ HARNESSLAYER_STORAGE: storage })).toThrow(ConfigError);
    }
  });

  it('reports the blob store in /healthz', async () => {
    const res = await t.call('GET', '/healthz', { key: '' });
    expect(res.status).toBe(200);
    expect(res.body.data).toMatchObject({ status: 'ok', blobStore: 's3' });
  });

  it('runs version upload → PUT → complete → get → download → rollback', async () => {
    const appId = await createApp();
    const v1: Bundle = { 'CLAUDE.md': '# s3', '.claude/settings.json': '{"a":true}', 'big.bin': Buffer.alloc(100 * 1024, 7) };
    const up = await t.call('POST', '/v1/version/upload', { key, body: { appId, files: declare(v1) } });
    expect(up.status).toBe(200);
    const urls = up.body.data.uploadUrls;
    // Files go straight to the bucket, one presigned PUT each: there is no batch URL through our server.
    expect(up.body.data.batchUrl).toBeUndefined();
    const guessed = await fetch(`${t.url}/v1/blobs/upload/${up.body.data.uploadId}?exp=9999999999&sig=x`, { method: 'PUT', body: 'tar' });
    expect(guessed.status).toBe(404);
    expect(urls[0].url).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:\\d+/${BUCKET}/deploy/blobs/uploads/${up.body.data.uploadId}/0\\?`));
    expect(urls[0].url).not.toContain('x-amz-checksum');
    expect(urls[0].url).not.toContain('x-amz-sdk-checksum-algorithm');
    await putAll(urls, v1);
    const done = await t.call('POST', `/v1/version/upload/${up.body.data.uploadId}/complete`, { key, body: { appId, versionId: up.body.data.versionId } });
    expect(done.status).toBe(200);
    expect(done.body.data).toMatchObject({ number: 1, isHead: true, treeHash: treeHash(v1), fileCount: 3 });
    expect(await keys(`blobs/${hex('# s3').slice(0, 2)}/`)).toContain(`deploy/blobs/blobs/${hex('# s3').slice(0, 2)}/${hex('# s3')}`);
    expect(await keys(`uploads/${up.body.data.uploadId}/`)).toEqual([]);

    const dl = (await t.call('GET', `/v1/version/download/${done.body.data.id}`, { key })).body.data;
    const files = await download(dl.url);
    expect(files['big.bin'].equals(v1['big.bin'] as Buffer)).toBe(true);
    expect(files['CLAUDE.md'].toString()).toBe('# s3');

    const v2 = await deploy(t, key, appId, { ...v1, 'CLAUDE.md': '# s3 v2' });
    expect(v2).toMatchObject({ number: 2, parentVersionId: done.body.data.id });
    const back = await t.call('POST', '/v1/version/rollback', { key, body: { appId, toVersionId: done.body.data.id } });
    expect(back.body.data).toMatchObject({ id: done.body.data.id, isHead: true });
  });

  it('takes `harnesslayer deploy`: one presigned PUT per file, straight to the bucket', async () => {
    const appId = await createApp('openclaw');
    const dir = await fs.mkdtemp(path.join(s3Dir, 'deploy-'));
    const expected: Record<string, Buffer> = {
      'AGENTS.md': Buffer.from('# deployed to s3\n'),
      'empty.txt': Buffer.alloc(0),
      'data/blob.bin': randomBytes(600 * 1024), // read in several chunks
    };
    for (const [name, bytes] of Object.entries(expected)) {
      await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
      await fs.writeFile(path.join(dir, name), bytes);
    }
    const result = await deployFolder(new HarnesslayerClient({ baseUrl: t.url, apiKey: key }), dir, appId);
    expect(result).toMatchObject({ uploaded: 3, skipped: 0, version: { number: 1, fileCount: 3 } });
    const files = await download((await t.call('GET', `/v1/version/download/${result.version.id}`, { key })).body.data.url);
    expect(Object.keys(files).sort()).toEqual(Object.keys(expected).sort());
    for (const [name, bytes] of Object.entries(expected)) expect(files[name].equals(bytes), name).toBe(true);
    expect(await keys(`blobs/${hex(expected['data/blob.bin']).slice(0, 2)}/`)).toContain(`deploy/blobs/blobs/${hex(expected['data/blob.bin']).slice(0, 2)}/${hex(expected['data/blob.bin'])}`);
  });

  it('writes a turn\'s workspace from the worker\'s copies of what it read from the bucket before', async () => {
    const appId = await createApp('openclaw');
    const files: Bundle = { 'AGENTS.md': '# inline', 'photo.bin': randomBytes(200 * 1024), 'data.bin': randomBytes(100 * 1024) };
    await deploy(t, key, appId, files);
    const profile = (await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier: 'cached' } })).body.data;
    const store = t.ctx.blobs as S3BlobStore;
    const send = vi.spyOn(store.client, 'send');
    const gets = () => send.mock.calls.filter(([command]) => command instanceof GetObjectCommand).length;
    try {
      for (let turn = 1; turn <= 2; turn++) {
        const cwd = path.join(s3Dir, `workspace-${turn}`);
        await materialize(t.ctx, profile.id, cwd);
        for (const [name, bytes] of Object.entries(files)) expect((await fs.readFile(path.join(cwd, name))).equals(Buffer.from(bytes)), name).toBe(true);
      }
      expect(gets()).toBe(2); // the two big files, once each
    } finally {
      send.mockRestore();
    }
  });

  it('keeps small files in the database as well, binary ones too (a read from the bucket is a round trip)', async () => {
    const appId = await createApp('openclaw');
    const files: Bundle = {
      'notes.md': '# Notes\n'.repeat(100),
      'pixel.png': Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0]), Buffer.alloc(2000, 9)]),
      'big.txt': 'x'.repeat(64 * 1024 + 1),
    };
    await deploy(t, key, appId, files);
    const rows = await t.ctx.db.selectFrom('blobs').select(['hash', 'data']).where('hash', 'in', Object.values(files).map(hex)).execute();
    const inline = Object.fromEntries(rows.map((r) => [r.hash, r.data !== null]));
    expect(inline).toEqual({ [hex(files['notes.md'])]: true, [hex(files['pixel.png'])]: true, [hex(files['big.txt'])]: false });
  });

  it('rejects wrong bytes at complete, naming the file, and stores nothing under the content address', async () => {
    const appId = await createApp();
    const files = { 'good.txt': 'good', 'bad.txt': 'expected' };
    const up = (await t.call('POST', '/v1/version/upload', { key, body: { appId, files: declare(files) } })).body.data;
    expect((await put(up.uploadUrls[0], 'good')).status).toBe(200);
    expect((await put(up.uploadUrls[1], 'tampered')).status).toBe(200); // S3 cannot know
    const res = await t.call('POST', `/v1/version/upload/${up.uploadId}/complete`, { key, body: { appId, versionId: up.versionId } });
    expect(res.status).toBe(400);
    expect(res.body.error).toContain('bad.txt');
    expect(res.body.details).toMatchObject({ missing: [] });
    expect((res.body.details as { mismatched: unknown[] }).mismatched).toEqual([{ name: 'bad.txt', expected: ref('expected'), actual: ref('tampered') }]);
    expect(await keys(`uploads/${up.uploadId}/1`)).toEqual([]);
    expect(await keys(`blobs/${hex('tampered').slice(0, 2)}/${hex('tampered')}`)).toEqual([]);
    expect(await keys(`blobs/${hex('expected').slice(0, 2)}/${hex('expected')}`)).toEqual([]);
    expect((await t.call('GET', `/v1/version/list?appId=${appId}`, { key })).body.data.total).toBe(0);
    // The upload stays open: PUT the right bytes and complete.
    await put(up.uploadUrls[1], 'expected');
    expect((await t.call('POST', `/v1/version/upload/${up.uploadId}/complete`, { key, body: { appId, versionId: up.versionId } })).status).toBe(200);
  });

  it('commits, downloads and snapshots states, and collects everything when the app goes', async () => {
    const appId = await createApp('openclaw');
    await deploy(t, key, appId, { 'a.md': 'a', 'b.md': 'b' });
    const p = (await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier: 'u1' } })).body.data;
    const s = await commit(t, key, p.id, { 'a.md': 'a', 'c.md': 'c from the profile' });
    expect(s.status).toBe(200);
    expect(s.body.data).toMatchObject({ number: 2, isHead: true, fileCount: 2 });
    const dl = (await t.call('POST', `/v1/state/download/${s.body.data.id}`, { key })).body.data;
    expect(asStrings(await download(dl.url))).toEqual({ 'a.md': 'a', 'c.md': 'c from the profile' });

    const archive = await tarGz([{ name: 'restored.md', data: 'from the sandbox' }]);
    const up = (await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, files: [{ name: 'snap.tgz', hash: ref(archive) }] } })).body.data;
    await put(up.uploadUrls[0], archive);
    const url = up.uploadUrls[0].url;
    for (const bad of [url.replace(/X-Amz-Signature=[0-9a-f]+/, `X-Amz-Signature=${'0'.repeat(64)}`), url.replace('/uploads/', '/uploads/x'), url.replace('/uploads/', '/uploads/%ZZ'), url.replace(/X-Amz-Expires=\d+/, 'X-Amz-Expires=999999')]) {
      expect((await t.call('POST', '/v1/state/snapshot', { key, body: { profileId: p.id, storageUrl: bad } })).status).toBe(400);
    }
    const snap = await t.call('POST', '/v1/state/snapshot', { key, body: { profileId: p.id, storageUrl: url } });
    expect(snap.status).toBe(200);
    const ready = await eventually(async () => {
      const r = (await t.call('GET', `/v1/state/${snap.body.data.id}`, { key })).body.data;
      return r.status !== 'materializing' && r;
    }, 'snapshot');
    expect(ready).toMatchObject({ status: 'ready', isHead: true, files: [{ name: 'restored.md', hash: ref('from the sandbox'), size: 16 }] });
    // The job removes its staging area right after the state is ready.
    await eventually(async () => (await keys(`uploads/snapshot-${snap.body.data.id}/`)).length === 0, 'snapshot staging removed');

    expect((await t.call('DELETE', `/v1/app/${appId}`, { key })).status).toBe(200);
    await eventually(async () => (await t.call('GET', `/v1/app/${appId}`, { key })).status === 404, 'app deleted');
    for (const content of ['b', 'c from the profile', 'from the sandbox', archive]) {
      expect(await keys(`blobs/${hex(content).slice(0, 2)}/${hex(content)}`)).toEqual([]);
    }
    expect(await keys(`uploads/${up.uploadId}/`)).toEqual([]);
  });

  it('fails a snapshot whose zip entry is corrupt, storing nothing; the next snapshot is restored', async () => {
    const appId = await createApp('openclaw');
    await deploy(t, key, appId, { 'a.md': 'a' });
    const p = (await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier: 'corrupt' } })).body.data;
    const snapshotOf = async (archive: Buffer) => {
      const up = (await t.call('POST', '/v1/state/upload', { key, body: { profileId: p.id, files: [{ name: 'snap', hash: ref(archive) }] } })).body.data;
      await put(up.uploadUrls[0], archive);
      const snap = await t.call('POST', '/v1/state/snapshot', { key, body: { profileId: p.id, storageUrl: up.uploadUrls[0].url } });
      expect(snap.status).toBe(200);
      return eventually(async () => {
        const r = (await t.call('GET', `/v1/state/${snap.body.data.id}`, { key })).body.data;
        return r.status !== 'materializing' && r;
      }, 'snapshot');
    };
    // Its second entry's deflated bytes overwritten: the entry breaks off while it is read.
    const zip = new yazl.ZipFile();
    zip.addBuffer(Buffer.from('fine'), 'ok.txt');
    zip.addBuffer(Buffer.from('hello '.repeat(5000)), 'c.txt');
    zip.end();
    const parts: Buffer[] = [];
    for await (const c of zip.outputStream) parts.push(c as Buffer);
    const corrupt = Buffer.concat(parts);
    const second = corrupt.indexOf(Buffer.from('PK\x03\x04', 'latin1'), 4);
    const data = second + 30 + corrupt.readUInt16LE(second + 26) + corrupt.readUInt16LE(second + 28);
    corrupt.fill(0xff, data + 4, data + 12);
    const failed = await snapshotOf(corrupt);
    expect(failed).toMatchObject({ status: 'failed', isHead: false });
    expect(failed.error).toMatch(/c\.txt|invalid zip|corrupt/);
    expect(await keys(`blobs/${hex('fine').slice(0, 2)}/${hex('fine')}`)).toEqual([]);
    const ready = await snapshotOf(await tarGz([{ name: 'after.md', data: 'after the corrupt one' }]));
    expect(ready).toMatchObject({ status: 'ready', isHead: true });
  });

  it('finds objects in the bucket that no row accounts for in the store check, and removes only those', async () => {
    const appId = await createApp('openclaw');
    const files: Bundle = { 'kept.md': 'kept in the bucket', 'kept.bin': randomBytes(2000) };
    const version = await deploy(t, key, appId, files);
    const stray = randomBytes(1500); // as a complete that failed after copying it leaves it
    await t.ctx.blobs.put(hex(stray), stray);
    const listed = new Set<string>();
    for await (const page of t.ctx.blobs.listStored()) for (const b of page) listed.add(b.hash);
    expect([...Object.values(files), stray].every((x) => listed.has(hex(x)))).toBe(true);

    // Only the stray object: the tests above, failed uploads among them, left nothing behind.
    expect(await collectStray(t.ctx, { minAge: 0 })).toEqual({ rows: 0, files: 1 });
    expect(await keys(`blobs/${hex(stray).slice(0, 2)}/${hex(stray)}`)).toEqual([]);
    const dl = (await t.call('GET', `/v1/version/download/${version.id}`, { key })).body.data;
    const back = await download(dl.url);
    for (const [name, data] of Object.entries(files)) expect(back[name].equals(Buffer.from(data)), name).toBe(true);
  });

  // Last: it takes the bucket away.
  it('answers a download 503 storage_unavailable while the bucket does not answer, before sending any byte', async () => {
    const appId = await createApp();
    const version = await deploy(t, key, appId, { 'only-here.md': `content ${randomBytes(8).toString('hex')}` });
    const dl = (await t.call('GET', `/v1/version/download/${version.id}`, { key })).body.data;
    await s3.close();
    const res = await fetch(dl.url);
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect(await res.json()).toMatchObject({ success: false, code: 'storage_unavailable', error: expect.stringContaining('Try again') });
  });
});
