import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { asStrings, declare, deploy, download, hex, put, putAll, putBatch, ref, tarball, treeHash, type Bundle } from './bundle.js';

// App versions on the local blob store, through a real listening socket.

let t: TestServer;
let key: string;
let other: { key: string; id: string };

beforeAll(async () => {
  t = await startTestServer({ listen: true });
  key = (await t.org()).key;
  other = await t.org();
});
afterAll(async () => t?.close());

let appCounter = 0;
async function newApp(type: 'claude' | 'openclaw' = 'claude', k = key): Promise<string> {
  const res = await t.call('POST', '/v1/app/create', { key: k, body: { slug: `app-${++appCounter}`, type } });
  return res.body.data.id;
}

async function upload(appId: string, files: Bundle, extra: Record<string, unknown> = {}, k = key) {
  return t.call('POST', '/v1/version/upload', { key: k, body: { appId, files: declare(files), ...extra } });
}

async function complete(appId: string, up: { uploadId: string; versionId: string }, k = key) {
  return t.call('POST', `/v1/version/upload/${up.uploadId}/complete`, { key: k, body: { appId, versionId: up.versionId } });
}

const blobDir = () => t.config.storage.slice('file:'.length);

/** Files under `dir`, but not those of discarded staging areas being deleted in the background. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  const trash = path.join(blobDir(), 'trash');
  return entries.filter((e) => e.isFile() && !e.parentPath.startsWith(trash)).map((e) => path.join(e.parentPath, e.name));
}

describe('version upload → PUT → complete → get → download → rollback', () => {
  it('runs the whole flow and keeps heads, numbers and parents right', async () => {
    const appId = await newApp();
    const v1Files: Bundle = {
      'CLAUDE.md': '# Hello\n',
      '.claude/settings.json': '{"permissions":{}}',
      '.claude/skills/greet/SKILL.md': 'say hi',
      'bin/data.bin': Buffer.from([0, 1, 2, 255, 254, 0]),
    };
    const up = await upload(appId, v1Files);
    expect(up.status).toBe(200);
    expect(up.body.data).toMatchObject({ uploadId: expect.stringMatching(/^upload-/), versionId: expect.stringMatching(/^ver-/) });
    expect(Date.parse(up.body.data.expiresAt) - Date.now()).toBeLessThanOrEqual(15 * 60 * 1000 + 1000);
    for (const u of up.body.data.uploadUrls) {
      expect(u).toMatchObject({ method: 'PUT', exists: false, headers: { 'Content-Type': 'application/octet-stream' } });
      expect(u.url.startsWith(`${t.url}/v1/blobs/upload/`)).toBe(true);
    }
    expect(await putAll(up.body.data.uploadUrls, v1Files)).toBe(4);
    const done = await complete(appId, up.body.data);
    expect(done.status).toBe(200);
    const v1 = done.body.data;
    expect(v1).toMatchObject({ id: up.body.data.versionId, appId, number: 1, parentVersionId: null, fileCount: 4, isHead: true, treeHash: treeHash(v1Files) });
    expect(v1.size).toBe(Object.values(v1Files).reduce((n, b) => n + Buffer.byteLength(b), 0));
    expect(v1.files.map((f: { name: string }) => f.name)).toEqual(['.claude/settings.json', '.claude/skills/greet/SKILL.md', 'CLAUDE.md', 'bin/data.bin']);
    expect(v1.files[2]).toEqual({ name: 'CLAUDE.md', hash: ref('# Hello\n'), size: 8 });
    expect((await t.call('GET', `/v1/app/${appId}`, { key })).body.data.headVersionId).toBe(v1.id);

    const got = await t.call('GET', `/v1/version/${v1.id}`, { key });
    expect(got.body.data).toEqual(v1);

    const dl = await t.call('GET', `/v1/version/download/${v1.id}`, { key });
    expect(dl.status).toBe(200);
    expect(dl.body.data.url.startsWith(`${t.url}/v1/download/`)).toBe(true);
    const zipped = await download(dl.body.data.url);
    expect(Object.keys(zipped).sort()).toEqual(Object.keys(v1Files).sort());
    for (const [name, body] of Object.entries(v1Files)) expect(zipped[name].equals(Buffer.from(body))).toBe(true);

    // v2 changes one file: the unchanged ones are already stored (`exists`), no PUT needed.
    const v2Files = { ...v1Files, 'CLAUDE.md': '# Hello v2\n' };
    const up2 = await upload(appId, v2Files);
    const exists = Object.fromEntries(up2.body.data.uploadUrls.map((u: { name: string; exists: boolean }) => [u.name, u.exists]));
    expect(exists).toEqual({ 'CLAUDE.md': false, '.claude/settings.json': true, '.claude/skills/greet/SKILL.md': true, 'bin/data.bin': true });
    expect(await putAll(up2.body.data.uploadUrls, v2Files)).toBe(1);
    const v2 = (await complete(appId, up2.body.data)).body.data;
    expect(v2).toMatchObject({ number: 2, parentVersionId: v1.id, isHead: true });
    expect(asStrings(await download((await t.call('GET', `/v1/version/download/${v2.id}`, { key })).body.data.url))['CLAUDE.md']).toBe('# Hello v2\n');

    const back = await t.call('POST', '/v1/version/rollback', { key, body: { appId, toVersionId: v1.id, reason: 'bad deploy' } });
    expect(back.status).toBe(200);
    expect(back.body.data).toMatchObject({ id: v1.id, isHead: true, number: 1 });
    expect((await t.call('GET', `/v1/app/${appId}`, { key })).body.data.headVersionId).toBe(v1.id);
    const record = await t.ctx.db.selectFrom('rollbacks').selectAll().where('appId', '=', appId).executeTakeFirstOrThrow();
    expect(record).toMatchObject({ kind: 'version', fromId: v2.id, toId: v1.id, reason: 'bad deploy' });

    // After the rollback the next version's parent is v1 and its number is still max + 1.
    const v3 = await deploy(t, key, appId, { ...v1Files, 'NEW.md': 'new' });
    expect(v3).toMatchObject({ number: 3, parentVersionId: v1.id, isHead: true });

    const list = await t.call('GET', `/v1/version/list?appId=${appId}&pageSize=2`, { key });
    expect(list.body.data).toMatchObject({ total: 3, page: 1, pageSize: 2 });
    expect(list.body.data.items.map((v: { number: number; isHead: boolean }) => [v.number, v.isHead])).toEqual([
      [3, true],
      [2, false],
    ]);
    expect(list.body.data.items[0].files).toBeUndefined();
    // Identical content is stored once.
    expect(await listFiles(blobDir()).then((f) => f.filter((p) => p.includes(hex('# Hello\n'))).length)).toBe(1);
  });

  it('accepts SRI base64 and bare hex hashes and stores an empty bundle', async () => {
    const appId = await newApp('openclaw');
    const body = 'abc';
    const sri = `sha256-${Buffer.from(hex(body), 'hex').toString('base64')}`;
    const up = await t.call('POST', '/v1/version/upload', { key, body: { appId, files: [{ name: 'a.txt', hash: sri }, { name: 'b.txt', hash: hex('b').toUpperCase() }] } });
    expect(up.status).toBe(200);
    await putAll(up.body.data.uploadUrls, { 'a.txt': body, 'b.txt': 'b' });
    const v = (await complete(appId, up.body.data)).body.data;
    expect(v.files).toEqual([
      { name: 'a.txt', hash: ref('abc'), size: 3 },
      { name: 'b.txt', hash: ref('b'), size: 1 },
    ]);
    const empty = await deploy(t, key, appId, {});
    expect(empty).toMatchObject({ number: 2, fileCount: 0, size: 0, treeHash: hex(''), files: [] });
    expect(await download((await t.call('GET', `/v1/version/download/${empty.id}`, { key })).body.data.url)).toEqual({});
  });

  it('keeps small text in the database as well, binary and big files in the blob store only', async () => {
    const appId = await newApp('openclaw');
    const files: Bundle = {
      'notes.md': '# Notes\n'.repeat(100),
      'pixel.png': Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0]), randomBytes(2000)]),
      'big.txt': 'x'.repeat(64 * 1024 + 1),
    };
    const v = await deploy(t, key, appId, files);
    const rows = await t.ctx.db.selectFrom('blobs').select(['hash', 'data']).where('hash', 'in', Object.values(files).map(hex)).execute();
    const inline = Object.fromEntries(rows.map((r) => [r.hash, r.data === null ? null : Buffer.from(r.data).toString()]));
    expect(inline).toEqual({ [hex(files['notes.md'])]: files['notes.md'], [hex(files['pixel.png'])]: null, [hex(files['big.txt'])]: null });
    // Every file reads back whole either way.
    const url = (await t.call('GET', `/v1/version/download/${v.id}`, { key })).body.data.url;
    expect(await download(url)).toEqual(Object.fromEntries(Object.entries(files).map(([k, b]) => [k, Buffer.from(b)])));
  });
});

describe('signed upload URLs', () => {
  it('rejects a PUT whose bytes do not match and stores nothing', async () => {
    const appId = await newApp();
    const up = await upload(appId, { 'a.txt': 'right' });
    const u = up.body.data.uploadUrls[0];
    const before = await listFiles(blobDir());
    const res = await put(u, 'wrong');
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ success: false, error: expect.stringContaining('nothing was stored') });
    expect(await listFiles(blobDir())).toEqual(before);
    const done = await complete(appId, up.body.data);
    expect(done.status).toBe(400);
    expect(done.body.details).toEqual({ missing: ['a.txt'], mismatched: [] });
    // The upload stays open: the right bytes go through and complete succeeds.
    expect((await put(u, 'right')).status).toBe(200);
    expect((await complete(appId, up.body.data)).status).toBe(200);
  });

  it('stores the bytes whatever Content-Type they come with, JSON included', async () => {
    const appId = await newApp();
    const files = { 'config.json': '{"model": "opus"}', 'data.json': '{}' };
    const up = (await upload(appId, files)).body.data;
    const withType = (headers: Record<string, string>, type: string) => ({ ...Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'content-type')), 'content-type': type });
    const single = up.uploadUrls.find((u: { name: string }) => u.name === 'config.json');
    const res = await fetch(single.url, { method: 'PUT', headers: withType(single.headers, 'application/json'), body: files['config.json'] });
    expect(res.status).toBe(200);
    const batch = await tarball([{ name: 'data.json', data: files['data.json'] }]);
    const batched = await fetch(up.batchUrl.url, { method: 'PUT', headers: withType(up.batchUrl.headers, 'application/json; charset=utf-8'), body: batch });
    expect(batched.status).toBe(200);
    const done = await complete(appId, up);
    expect(done.status).toBe(200);
    expect(asStrings(await download((await t.call('GET', `/v1/version/download/${done.body.data.id}`, { key })).body.data.url))).toEqual(files);
  });

  it('refuses an expired URL', async () => {
    const appId = await newApp();
    const up = await upload(appId, { 'a.txt': 'x' });
    const realNow = t.ctx.now;
    t.ctx.now = () => new Date(Date.now() + 16 * 60 * 1000);
    try {
      const res = await put(up.body.data.uploadUrls[0], 'x');
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: string }).error).toMatch(/expired/);
    } finally {
      t.ctx.now = realNow;
    }
  });

  it('refuses a URL altered to point at another file, upload or hash', async () => {
    const appId = await newApp();
    const files = { 'a.txt': 'aaa', 'b.txt': 'bbb' };
    const up = await upload(appId, files);
    const [a, b] = up.body.data.uploadUrls;
    const toB = { ...a, url: a.url.replace('/0?', '/1?') };
    expect(toB.url).not.toBe(a.url);
    expect((await put(toB, 'bbb')).status).toBe(403);
    const otherHash = { ...a, url: a.url.replace(/h=[0-9a-f]+/, `h=${hex('bbb')}`) };
    expect((await put(otherHash, 'bbb')).status).toBe(403);
    const otherUpload = { ...a, url: a.url.replace(up.body.data.uploadId, 'upload-XXXXXXXXXXXXXXXX') };
    expect((await put(otherUpload, 'aaa')).status).toBe(403);
    const res = await put(b, 'bbb');
    expect(res.status).toBe(200);
  });
});

describe('a refused upload PUT', () => {
  /** Sends `req`'s headers and a few bytes of the body it announces, as a client that gives up on a refusal would. */
  function send(agent: http.Agent, url: string, method: string, headers: Record<string, string> = {}): Promise<{ status: number; connection?: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request(url, { method, agent, headers }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
      });
      req.on('error', reject);
      req.end(method === 'PUT' ? 'the first bytes of a body that never comes' : undefined);
    });
  }

  it('closes the connection when it answers before the body, so a keep-alive client is answered next', async () => {
    const appId = await newApp();
    const { uploadUrls: [u], batchUrl } = (await upload(appId, { 'a.txt': 'announced as a terabyte' })).body.data;
    const announced = { ...u.headers, 'content-length': String(2 ** 40) };
    for (const [why, url, status] of [
      ['too large', u.url, 413],
      ['altered URL', u.url.replace(/sig=[^&]+/, 'sig=0'), 403],
      ['invalid index', u.url.replace('/0?', '/x?'), 400],
      ['altered batch URL', batchUrl.url.replace(/sig=[^&]+/, 'sig=0'), 403],
    ] as const) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        expect(await send(agent, url, 'PUT', announced), why).toEqual({ status, connection: 'close' });
        // On a socket the server kept, this request would be read as more of the discarded body.
        const next = await Promise.race([
          send(agent, `${t.url}/healthz`, 'GET'),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${why}: the next request on a keep-alive agent got no answer`)), 5_000)),
        ]);
        expect(next.status).toBe(200);
      } finally {
        agent.destroy();
      }
    }
    // The URL itself still works.
    expect((await put(u, 'announced as a terabyte')).status).toBe(200);
  });
});

describe('batch upload URL', () => {
  it('takes a tar of many files, verified one by one, and completes the same version as single PUTs', async () => {
    const appId = await newApp('openclaw');
    const files: Bundle = {
      'AGENTS.md': '# batch\n',
      'bin/zero.bin': Buffer.from([0, 255, 0, 1]),
      'empty.txt': '',
      // A name past ustar's 100 bytes travels in a pax header.
      [`deep/${'d'.repeat(120)}/${'n'.repeat(150)}.md`]: 'long name',
      'big.bin': Buffer.alloc(2 * 1024 * 1024, 3), // above the size the server holds in memory: streamed
    };
    const up = (await upload(appId, files)).body.data;
    expect(up.batchUrl).toMatchObject({ method: 'PUT', headers: { 'Content-Type': 'application/x-tar' } });
    expect(up.batchUrl.url.startsWith(`${t.url}/v1/blobs/upload/${up.uploadId}?`)).toBe(true);
    const res = await putBatch(up.batchUrl, await tarball(Object.entries(files).map(([name, body]) => ({ name, data: body }))));
    expect(res.status).toBe(200);
    expect(((await res.json()) as { data: unknown }).data).toEqual({ uploadId: up.uploadId, stored: 5 });
    const done = await complete(appId, up);
    expect(done.status).toBe(200);
    expect(done.body.data).toMatchObject({ number: 1, fileCount: 5, treeHash: treeHash(files) });
    const url = (await t.call('GET', `/v1/version/download/${done.body.data.id}`, { key })).body.data.url;
    const got = await download(url);
    expect(Object.keys(got).sort()).toEqual(Object.keys(files).sort());
    for (const [name, body] of Object.entries(files)) expect(got[name].equals(Buffer.from(body))).toBe(true);
  });

  it('stores the matching entries, rejects wrong bytes, undeclared names and links, naming each', async () => {
    const appId = await newApp();
    const files = { 'a.txt': 'aaa', 'b.txt': 'bbb' };
    const up = (await upload(appId, files)).body.data;
    const before = await listFiles(blobDir());
    const res = await putBatch(
      up.batchUrl,
      await tarball([
        { name: 'a.txt', data: 'aaa' },
        { name: 'b.txt', data: 'not b' },
        { name: '../c.txt', data: 'sneaky' },
        { name: 'link', type: 'symlink', linkname: '/etc/passwd' },
      ]),
    );
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: string; details: { stored: number; mismatched: { name: string }[]; unknown: string[] } };
    expect(body.error).toMatch(/b\.txt \(hash mismatch\).*\.\.\/c\.txt \(not a declared file\).*link \(not a declared file\)/);
    expect(body.details).toMatchObject({ stored: 1, mismatched: [{ name: 'b.txt', expected: ref('bbb'), actual: ref('not b') }], unknown: ['../c.txt', 'link'] });
    // Only a.txt was staged: nothing reached the content-addressed store, nothing outside staging.
    const added = (await listFiles(blobDir())).filter((f) => !before.includes(f));
    // (one pack: its bytes, which are a.txt's alone, and its index)
    const staged = added.map((f) => path.relative(blobDir(), f)).sort();
    expect(staged).toEqual([expect.stringMatching(new RegExp(`^uploads/${up.uploadId}/pack-[\\w-]+$`)), expect.stringMatching(/\.idx$/)]);
    expect(await fs.readFile(path.join(blobDir(), staged[0]), 'utf8')).toBe('aaa');
    const incomplete = await complete(appId, up);
    expect(incomplete.status).toBe(400);
    expect(incomplete.body.details).toEqual({ missing: ['b.txt'], mismatched: [] });
    // The upload stays open: the file's own URL (or another batch) finishes it.
    expect((await put(up.uploadUrls[1], 'bbb')).status).toBe(200);
    expect((await complete(appId, up)).status).toBe(200);
  });

  it('cuts a mismatching entry out from between good ones, and keeps repeated content once', async () => {
    const appId = await newApp();
    const files = { 'a.txt': 'aaa', 'b.txt': 'bbb', 'c.txt': 'ccc', 'd.txt': 'aaa' };
    const up = (await upload(appId, files)).body.data;
    const res = await putBatch(
      up.batchUrl,
      await tarball([
        { name: 'a.txt', data: 'aaa' },
        { name: 'b.txt', data: 'not b' },
        { name: 'c.txt', data: 'ccc' },
        { name: 'd.txt', data: 'aaa' },
      ]),
    );
    const body = (await res.json()) as { details: { stored: number; mismatched: unknown[] } };
    expect(res.status, JSON.stringify(body)).toBe(400);
    expect(body.details).toMatchObject({ stored: 3, mismatched: [{ name: 'b.txt', expected: ref('bbb'), actual: ref('not b') }] });
    // The pack holds a.txt's bytes once and c.txt's, nothing of b.txt's.
    const stage = path.join(blobDir(), 'uploads', up.uploadId);
    const names = await fs.readdir(stage);
    const pack = names.find((n) => n.startsWith('pack-') && !n.endsWith('.idx'))!;
    expect(names.sort()).toEqual([pack, `${pack}.idx`]);
    expect(await fs.readFile(path.join(stage, pack), 'utf8')).toBe('aaaccc');
    const index = JSON.parse(await fs.readFile(path.join(stage, `${pack}.idx`), 'utf8')) as [number, string, number, number][];
    expect(index.map(([i, , offset, size]) => [i, offset, size])).toEqual([
      [0, 0, 3],
      [2, 3, 3],
      [3, 0, 3],
    ]);
    expect((await put(up.uploadUrls[1], 'bbb')).status).toBe(200);
    const done = await complete(appId, up);
    expect(done.status).toBe(200);
    const got = await download((await t.call('GET', `/v1/version/download/${done.body.data.id}`, { key })).body.data.url);
    expect(asStrings(got)).toEqual(files);
  });

  it('refuses a body that is not a tar, and an altered or expired batch URL', async () => {
    const appId = await newApp();
    const up = (await upload(appId, { 'a.txt': 'only in the refusal test' })).body.data;
    const garbage = await putBatch(up.batchUrl, Buffer.from('this is not a tar archive, just text that goes on '.repeat(20)));
    expect(garbage.status).toBe(400);
    expect(((await garbage.json()) as { error: string }).error).toMatch(/not a complete tar archive/);
    const tarA = await tarball([{ name: 'a.txt', data: 'only in the refusal test' }]);
    const other = (await upload(appId, { 'a.txt': 'only in the refusal test' })).body.data;
    expect((await putBatch({ ...up.batchUrl, url: up.batchUrl.url.replace(up.uploadId, other.uploadId) }, tarA)).status).toBe(403);
    expect((await putBatch({ ...up.batchUrl, url: up.batchUrl.url.replace(/exp=\d+/, (m: string) => `exp=${Number(m.slice(4)) + 3600}`) }, tarA)).status).toBe(403);
    const realNow = t.ctx.now;
    t.ctx.now = () => new Date(Date.now() + 16 * 60 * 1000);
    try {
      const expired = await putBatch(up.batchUrl, tarA);
      expect(expired.status).toBe(403);
      expect(((await expired.json()) as { error: string }).error).toMatch(/expired/);
    } finally {
      t.ctx.now = realNow;
    }
    const flood = await putBatch(up.batchUrl, await tarball(Array.from({ length: 102 }, (_, i) => ({ name: `junk-${i}`, data: 'x' }))));
    expect(flood.status).toBe(400);
    expect(((await flood.json()) as { error: string }).error).toMatch(/more entries than the upload declares files \(1\)/);
    const early = await complete(appId, up);
    expect(early.body.details, JSON.stringify(early.body)).toEqual({ missing: ['a.txt'], mismatched: [] });
    expect((await putBatch(up.batchUrl, tarA)).status).toBe(200);
    expect((await complete(appId, up)).status).toBe(200);
  });
});

describe('batch upload interrupted', () => {
  it('keeps the entries that arrived whole, stores nothing of the cut one, and serves the next request', async () => {
    const appId = await newApp('openclaw');
    const files = { 'first.txt': 'arrived whole', 'second.bin': randomBytes(300_000) };
    const up = (await upload(appId, files)).body.data;
    const body = await tarball(Object.entries(files).map(([name, data]) => ({ name, data })));
    // Send all but the last 100 KB, then drop the connection.
    const url = new URL(up.batchUrl.url);
    const req = http.request(url, { method: 'PUT', headers: { ...up.batchUrl.headers, 'content-length': String(body.length) } });
    req.on('error', () => {}); // the reset we cause
    await new Promise<void>((resolve) => req.write(body.subarray(0, body.length - 100_000), () => resolve()));
    req.destroy();
    const details = await eventually(async () => {
      const res = await complete(appId, up);
      return res.status === 400 && (res.body.details as { missing: string[] }).missing.length === 1 ? res.body.details : undefined;
    }, 'the server to handle the interrupted batch');
    expect(details).toEqual({ missing: ['second.bin'], mismatched: [] });
    const rest = await putBatch(up.batchUrl, await tarball([{ name: 'second.bin', data: files['second.bin'] }]));
    expect(rest.status).toBe(200);
    const done = await complete(appId, up);
    expect(done.status).toBe(200);
    expect(done.body.data).toMatchObject({ fileCount: 2, treeHash: treeHash(files) });
  });
});

describe('complete', () => {
  it('names a missing file, registers nothing, and completes once it is there', async () => {
    const appId = await newApp();
    const files = { 'a.txt': 'a', 'missing.txt': 'm' };
    const up = await upload(appId, files);
    await put(up.body.data.uploadUrls[0], 'a');
    const res = await complete(appId, up.body.data);
    expect(res.status).toBe(400);
    expect(res.body.error).toContain('missing.txt');
    expect((await t.call('GET', `/v1/version/list?appId=${appId}`, { key })).body.data.total).toBe(0);
    expect((await t.call('GET', `/v1/app/${appId}`, { key })).body.data.headVersionId).toBeNull();
    await put(up.body.data.uploadUrls[1], 'm');
    expect((await complete(appId, up.body.data)).status).toBe(200);
  });

  it('returns the same version when completed twice, and version/create registers an open upload', async () => {
    const appId = await newApp();
    const files = { 'a.txt': 'twice' };
    const up = await upload(appId, files, { versionId: 'release-1' });
    expect(up.body.data.versionId).toBe('release-1');
    await putAll(up.body.data.uploadUrls, files);
    const first = await complete(appId, up.body.data);
    const second = await complete(appId, up.body.data);
    expect(second.status).toBe(200);
    expect(second.body.data).toEqual(first.body.data);
    // Its URLs, still signed and unexpired, store nothing more.
    const late = await put(up.body.data.uploadUrls[0], files['a.txt']);
    expect(late.status).toBe(409);
    expect(((await late.json()) as { error: string }).error).toMatch(/already complete \(version "release-1"\).*Start a new upload/);
    expect((await putBatch(up.body.data.batchUrl, await tarball([{ name: 'a.txt', data: files['a.txt'] }]))).status).toBe(409);
    expect(await listFiles(path.join(blobDir(), 'uploads', up.body.data.uploadId))).toEqual([]);
    expect((await t.call('POST', '/v1/version/create', { key, body: { appId, versionId: 'release-1' } })).body.data.id).toBe('release-1');
    expect((await t.call('GET', `/v1/version/list?appId=${appId}`, { key })).body.data.total).toBe(1);

    const up2 = await upload(appId, { 'b.txt': 'b' });
    await putAll(up2.body.data.uploadUrls, { 'b.txt': 'b' });
    const created = await t.call('POST', '/v1/version/create', { key, body: { appId, versionId: up2.body.data.versionId } });
    expect(created.status).toBe(200);
    expect(created.body.data).toMatchObject({ id: up2.body.data.versionId, number: 2, parentVersionId: 'release-1', isHead: true });
    expect((await t.call('POST', '/v1/version/create', { key, body: { appId, versionId: 'ver-unknown' } })).status).toBe(404);
  });

  it('a complete repeated while the first is still checking files gets the same version, not "PUT again"', async () => {
    const appId = await newApp();
    const files = { 'a.txt': 'racing' };
    const up = (await upload(appId, files)).body.data;
    await putAll(up.uploadUrls, files);
    // The first complete to check a file lets a second complete run to its end first: the
    // second registers the version and discards the staging area under the first.
    const blobs = t.ctx.blobs;
    const verify = blobs.verifyStaged.bind(blobs);
    let second: ReturnType<typeof complete> | undefined;
    blobs.verifyStaged = async (...args) => {
      if (!second) {
        second = complete(appId, up);
        await second;
      }
      return verify(...args);
    };
    try {
      const first = await complete(appId, up);
      expect((await second!).status).toBe(200);
      expect(first.status, JSON.stringify(first.body)).toBe(200);
      expect(first.body.data).toEqual((await second!).body.data);
    } finally {
      blobs.verifyStaged = verify;
    }
    expect((await t.call('GET', `/v1/version/list?appId=${appId}`, { key })).body.data.total).toBe(1);
  });

  it('a PUT still streaming when its app is deleted answers 404 and leaves nothing staged', async () => {
    const appId = await newApp();
    const bytes = randomBytes(1024 * 1024);
    const up = (await upload(appId, { 'big.bin': bytes })).body.data;
    const target = new URL(up.uploadUrls[0].url);
    const req = http.request(target, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) } });
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      req.on('response', (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
    });
    req.write(bytes.subarray(0, 1024));
    // The server has taken the PUT (it checked the upload) and is streaming its body.
    await eventually(async () => (await listFiles(path.join(blobDir(), 'uploads', up.uploadId))).length > 0 || (await listFiles(path.join(blobDir(), 'tmp'))).length > 0, 'the PUT to start storing');
    expect((await t.call('DELETE', `/v1/app/${appId}`, { key })).status).toBe(200);
    await eventually(async () => (await t.call('GET', `/v1/app/${appId}`, { key })).status === 404, 'the app to be deleted');
    req.end(bytes.subarray(1024));
    expect((await answer).status).toBe(404);
    expect(await listFiles(path.join(blobDir(), 'uploads', up.uploadId))).toEqual([]);
  });

  it('complete of an upload swept after its 24 h still returns the version it registered', async () => {
    const appId = await newApp();
    const files = { 'a.txt': 'old' };
    const up = (await upload(appId, files)).body.data;
    await putAll(up.uploadUrls, files);
    const first = await complete(appId, up);
    await t.ctx.db.deleteFrom('uploads').where('id', '=', up.uploadId).execute(); // what the sweep does
    const again = await complete(appId, up);
    expect(again.status).toBe(200);
    expect(again.body.data).toEqual(first.body.data);
    expect((await complete(appId, { uploadId: up.uploadId, versionId: 'ver-other' })).status).toBe(404);
    // Another upload id naming this version is a 404: it never registered it.
    expect((await complete(appId, { uploadId: 'upload-doesnotexist0000', versionId: up.versionId })).status).toBe(404);
  });

  it('rejects an invalid .claude/settings.json of a claude app, naming the file', async () => {
    const appId = await newApp('claude');
    const files = { '.claude/settings.json': '{"oops": ', 'CLAUDE.md': 'x' };
    const up = await upload(appId, files);
    await putAll(up.body.data.uploadUrls, files);
    const res = await complete(appId, up.body.data);
    expect(res.status).toBe(400);
    expect(res.body.error).toContain('.claude/settings.json');
    expect((await t.call('GET', `/v1/version/list?appId=${appId}`, { key })).body.data.total).toBe(0);
    // openclaw apps do not interpret the file.
    const claw = await newApp('openclaw');
    expect((await deploy(t, key, claw, files)).number).toBe(1);
  });
});

describe('upload input rules', () => {
  it.each([
    ['../x', 'segment'],
    ['/x', 'absolute'],
    ['a//b', 'empty segment'],
    ['a/', 'empty segment'],
    ['a\0b', 'NUL'],
    ['a\\b', 'backslash'],
    ['./a', 'segment'],
    ['', 'empty'],
    ['é'.repeat(512) + 'x', '1024 bytes'],
  ])('rejects the file name %j', async (name, why) => {
    const appId = await newApp();
    const res = await t.call('POST', '/v1/version/upload', { key, body: { appId, files: [{ name, hash: ref('x') }] } });
    expect(res.status).toBe(400);
    expect(res.body.error).toContain(why);
    expect(await t.ctx.db.selectFrom('uploads').select('id').where('appId', '=', appId).execute()).toEqual([]);
  });

  it.each([
    [['notes', 'notes/today.md'], /"notes\/today\.md".*inside "notes", which is also a file/],
    [['a/b/c.md', 'a/b'], /"a\/b".*both a file and a folder \("a\/b\/c\.md" is inside it\)/],
  ])('rejects %j: no disk holds a file and a folder of one name', async (names, message) => {
    const appId = await newApp();
    const res = await t.call('POST', '/v1/version/upload', { key, body: { appId, files: names.map((name) => ({ name, hash: ref(name) })) } });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatch(message);
    expect(await t.ctx.db.selectFrom('uploads').select('id').where('appId', '=', appId).execute()).toEqual([]);
  });

  it('accepts a 1,024-byte name', async () => {
    const appId = await newApp();
    const name = 'é'.repeat(512);
    expect(Buffer.byteLength(name)).toBe(1024);
    expect((await t.call('POST', '/v1/version/upload', { key, body: { appId, files: [{ name, hash: ref('x') }] } })).status).toBe(200);
  });

  it('rejects 11,000 files, duplicates, bad hashes, bad ids and unknown fields', async () => {
    const appId = await newApp();
    const many = Array.from({ length: 11_000 }, (_, i) => ({ name: `f${i}`, hash: ref(String(i)) }));
    const tooMany = await t.call('POST', '/v1/version/upload', { key, body: { appId, files: many } });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error).toMatch(/10000/);
    const dup = await t.call('POST', '/v1/version/upload', { key, body: { appId, files: [{ name: 'a', hash: ref('1') }, { name: 'a', hash: ref('2') }] } });
    expect(dup.status).toBe(400);
    expect(dup.body.error).toContain('duplicate');
    for (const hash of ['md5-abc', `sha256-${'g'.repeat(64)}`, 'sha256-short', hex('x').slice(1)]) {
      expect((await t.call('POST', '/v1/version/upload', { key, body: { appId, files: [{ name: 'a', hash }] } })).status).toBe(400);
    }
    for (const versionId of ['', 'a'.repeat(65), 'has space', 'dot.ted']) {
      expect((await t.call('POST', '/v1/version/upload', { key, body: { appId, versionId, files: [] } })).status).toBe(400);
    }
    const extra = await t.call('POST', '/v1/version/upload', { key, body: { appId, files: [{ name: 'a', hash: ref('1'), size: 1 }] } });
    expect(extra.status).toBe(400);
    expect(extra.body.error).toContain('size');
  });

  it('answers 409 for a versionId already used', async () => {
    const appId = await newApp();
    await deploy(t, key, appId, { 'a.txt': 'a' }, { versionId: 'v-taken' });
    expect((await upload(appId, { 'b.txt': 'b' }, { versionId: 'v-taken' })).status).toBe(409);
    const open = await upload(appId, { 'b.txt': 'b' }, { versionId: 'v-open' });
    expect(open.status).toBe(200);
    expect((await upload(appId, { 'c.txt': 'c' }, { versionId: 'v-open' })).status).toBe(409);
  });
});

describe('tenancy', () => {
  it('hides versions, uploads and content of another organization', async () => {
    const appId = await newApp();
    const secret = { 'secret.txt': 'tenant A only' };
    const v = await deploy(t, key, appId, secret);
    const theirApp = await newApp('claude', other.key);
    const up = await upload(theirApp, secret, {}, other.key);
    expect(up.body.data.uploadUrls[0].exists).toBe(false);
    // Completing without the bytes does not borrow tenant A's blob.
    expect((await complete(theirApp, up.body.data, other.key)).status).toBe(400);
    expect((await t.call('GET', `/v1/version/${v.id}`, { key: other.key })).status).toBe(404);
    expect((await t.call('GET', `/v1/version/download/${v.id}`, { key: other.key })).status).toBe(404);
    expect((await t.call('GET', `/v1/version/list?appId=${appId}`, { key: other.key })).status).toBe(404);
    expect((await t.call('POST', '/v1/version/rollback', { key: other.key, body: { appId: theirApp, toVersionId: v.id } })).status).toBe(404);
    const mine = await upload(appId, { 'x.txt': 'x' });
    expect((await complete(theirApp, mine.body.data, other.key)).status).toBe(404);
    // Another app of the same organization is not this app either.
    const sibling = await newApp();
    expect((await t.call('POST', '/v1/version/rollback', { key, body: { appId: sibling, toVersionId: v.id } })).status).toBe(404);
  });

  it('download URLs cannot be altered and expire', async () => {
    const appId = await newApp();
    const v = await deploy(t, key, appId, { 'a.txt': 'a' });
    const { url } = (await t.call('GET', `/v1/version/download/${v.id}`, { key })).body.data;
    const token = url.split('/').pop()!;
    const [payload, sig] = token.split('.');
    const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), i: 'ver-other' })).toString('base64url');
    const altered = await fetch(url.replace(token, `${forged}.${sig}`));
    expect(altered.status).toBe(403);
    expect(await altered.json()).toMatchObject({ success: false });
    const realNow = t.ctx.now;
    t.ctx.now = () => new Date(Date.now() + 16 * 60 * 1000);
    try {
      const expired = await fetch(url);
      expect(expired.status).toBe(403);
      expect(((await expired.json()) as { error: string }).error).toMatch(/expired/);
    } finally {
      t.ctx.now = realNow;
    }
  });
});
