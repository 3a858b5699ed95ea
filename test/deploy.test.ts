import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { download, rawZip, tarGz } from './files/bundle.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { HarnesslayerClient } from '../src/sdk/client.js';
import { deployFolder, type DeployProgress } from '../src/sdk/deploy.js';

let t: TestServer;
let folder: string;
let scratch: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true });
  folder = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-deploy-'));
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-deploy-scratch-'));
});
afterAll(async () => {
  await t?.close();
  await fs.rm(folder, { recursive: true, force: true });
  await fs.rm(scratch, { recursive: true, force: true });
});

/** A new organization with an openclaw app `slug`, a client for it, and an empty folder (removed after all). */
async function appAndFolder(slug: string) {
  const org = await t.org();
  await t.call('POST', '/v1/app/create', { key: org.key, body: { slug, type: 'openclaw' } });
  return { key: org.key, client: new HarnesslayerClient({ baseUrl: t.url, apiKey: org.key }), dir: await fs.mkdtemp(path.join(scratch, `${slug}-`)) };
}

async function write(files: Record<string, string>) {
  for (const [name, body] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(folder, name)), { recursive: true });
    await fs.writeFile(path.join(folder, name), body);
  }
}

async function deploy(key: string, app: string, dir = folder) {
  const child = spawn(process.execPath, [path.resolve('bin/harnesslayer.mjs'), 'deploy', dir, '--app', app], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, HARNESSLAYER_URL: t.url, HARNESSLAYER_API_KEY: key },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const [code] = await once(child, 'exit');
  return { code, stdout, stderr };
}

describe('harnesslayer deploy', () => {
  it('uploads a folder as the next version, skipping ignored files and content already stored', async () => {
    const org = await t.org();
    await t.call('POST', '/v1/app/create', { key: org.key, body: { slug: 'deployed', type: 'claude' } });
    await write({
      'CLAUDE.md': '# Agent\n',
      '.claude/settings.json': '{"model":"sonnet"}\n',
      '.claude/skills/a/SKILL.md': 'skill a\n',
      'notes/draft.tmp': 'ignored\n',
      'secrets/key.txt': 'ignored too\n',
      '.harnesslayerignore': '*.tmp\nsecrets/\n',
    });
    const first = await deploy(org.key, 'deployed');
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/Deployed version 1 \(.+\): 3 files, .*uploaded 3, already stored 0/);

    const app = (await t.call('GET', '/v1/app/deployed', { key: org.key })).body.data;
    const url = (await t.call('GET', `/v1/version/download/${app.headVersionId}`, { key: org.key })).body.data.url;
    const files = await download(url);
    expect(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, v.toString()]))).toEqual({
      'CLAUDE.md': '# Agent\n',
      '.claude/settings.json': '{"model":"sonnet"}\n',
      '.claude/skills/a/SKILL.md': 'skill a\n',
    });

    await write({ 'CLAUDE.md': '# Agent v2\n' });
    const second = await deploy(org.key, 'deployed');
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/Deployed version 2 .*uploaded 1, already stored 2/);
  });

  it('sends small files many to a request through the batch URL, big ones through their own URL', async () => {
    const { key, client, dir } = await appAndFolder('many');
    const expected: Record<string, Buffer> = {};
    for (let i = 0; i < 300; i++) expected[`notes/n-${i}.md`] = Buffer.from(`note ${i}\n`.repeat(i + 1));
    expected['big.bin'] = Buffer.alloc(9 * 1024 * 1024, 5); // above the batched size
    for (const [name, body] of Object.entries(expected)) {
      await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
      await fs.writeFile(path.join(dir, name), body);
    }
    // Count the PUTs by the URLs they go to (the real requests still go out).
    const requests = vi.spyOn(http, 'request');
    const progress: DeployProgress[] = [];
    let result;
    let puts: string[];
    try {
      result = await deployFolder(client, dir, 'many', { onProgress: (p) => progress.push(p) });
    } finally {
      puts = requests.mock.calls.filter(([, opts]) => (opts as http.RequestOptions).method === 'PUT').map(([url]) => (url as URL).pathname);
      requests.mockRestore();
    }
    expect(result).toMatchObject({ uploaded: 301, skipped: 0, version: { number: 1, fileCount: 301 } });
    const batchPuts = puts.filter((p) => /^\/v1\/blobs\/upload\/[^/]+$/.test(p));
    expect(batchPuts).toHaveLength(2); // 300 small files, at most 256 to a batch
    expect(puts.length - batchPuts.length).toBe(1); // big.bin
    const last = progress.filter((p) => p.phase === 'uploading').at(-1);
    expect(last).toMatchObject({ done: 301, total: 301, bytes: Object.values(expected).reduce((n, b) => n + b.length, 0) });
    const app = (await t.call('GET', '/v1/app/many', { key })).body.data;
    const url = (await t.call('GET', `/v1/version/download/${app.headVersionId}`, { key })).body.data.url;
    const files = await download(url);
    expect(Object.keys(files).sort()).toEqual(Object.keys(expected).sort());
    for (const [name, body] of Object.entries(expected)) expect(files[name].equals(body), name).toBe(true);
  });

  it('reports a refusal that comes before the whole batch was sent', async () => {
    const { client, dir } = await appAndFolder('too-big');
    const limit = t.config.maxBundleBytes;
    try {
      for (let i = 0; i < 64; i++) await fs.writeFile(path.join(dir, `part-${i}.bin`), randomBytes(256 * 1024));
      // The server stops reading the 16 MiB tar after 1 MiB, far more than the sockets buffer.
      t.config.maxBundleBytes = 1024 * 1024;
      await expect(deployFolder(client, dir, 'too-big')).rejects.toThrow(
        /^Uploading 64 files \(part-0\.bin, …\) failed \(413\): .*exceed the bundle limit of 1048576 bytes/,
      );
      // A file sent on its own is refused on its Content-Length, before any of its 12 MiB is read.
      const single = await appAndFolder('too-big-single');
      await fs.writeFile(path.join(single.dir, 'big.bin'), randomBytes(12 * 1024 * 1024));
      await expect(deployFolder(single.client, single.dir, 'too-big-single')).rejects.toThrow(/^Uploading big\.bin failed \(413\): A file may hold at most 1048576 bytes\.$/);
    } finally {
      t.config.maxBundleBytes = limit;
    }
  });

  it('answers an early refusal and then closes without resetting a client still sending', async () => {
    const { key } = await appAndFolder('refused-early');
    const limit = t.config.maxBundleBytes;
    const hash = `sha256-${'0'.repeat(64)}`;
    const upload = (await t.call('POST', '/v1/version/upload', { key, body: { appId: 'refused-early', files: [{ name: 'big.bin', hash }] } })).body.data;
    const target = new URL(upload.uploadUrls[0].url);
    t.config.maxBundleBytes = 1024 * 1024;
    try {
      // A client that announces 40 MiB and sends 8 MiB of it before it reads a byte: the 413 is
      // answered on the headers, long before. A reset would throw away the answer unread.
      const socket = net.connect(Number(target.port), target.hostname);
      await once(socket, 'connect');
      socket.pause();
      socket.write(`PUT ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${40 * 1024 * 1024}\r\n\r\n`);
      let writeError: Error | undefined;
      socket.on('error', (err) => (writeError ??= err));
      const chunk = Buffer.alloc(256 * 1024);
      for (let i = 0; i < 32 && !writeError; i++) if (!socket.write(chunk)) await Promise.race([once(socket, 'drain'), once(socket, 'close')]);
      // Like any HTTP client, it does not close its side before the answer: it reads on.
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
      socket.resume();
      await once(socket, 'close');
      expect(writeError).toBeUndefined();
      expect(answer).toMatch(/^HTTP\/1\.1 413 /);
      expect(answer).toMatch(/connection: close/i);
      expect(answer).toContain('A file may hold at most 1048576 bytes.');

      // The same refusal of a chunked body (no length announced), once 1 MiB of it has been read,
      // and of a batch whose tar exceeds the limit.
      for (const [url, refusal] of [
        [target, 'A file may hold at most 1048576 bytes; nothing was stored.'],
        [new URL(upload.batchUrl.url), 'exceed the bundle limit of 1048576 bytes'],
      ] as const) {
        const chunked = net.connect(Number(url.port), url.hostname);
        await once(chunked, 'connect');
        chunked.pause();
        chunked.write(`PUT ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n`);
        let chunkedError: Error | undefined;
        chunked.on('error', (err) => (chunkedError ??= err));
        // A tar entry header announcing 8 MiB first (read as a file's bytes by the single-file URL).
        const header = Buffer.alloc(512);
        header.write('big.bin', 0);
        header.write(`${(8 * 1024 * 1024).toString(8).padStart(11, '0')}\0`, 124);
        header.write('0', 156);
        header.write('ustar\0' + '00', 257);
        header.fill(' ', 148, 156);
        let sum = 0;
        for (const b of header) sum += b;
        header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
        const body = Buffer.concat([header, Buffer.alloc(8 * 1024 * 1024)]);
        for (let at = 0; at < body.length && !chunkedError; at += 256 * 1024) {
          const part = body.subarray(at, at + 256 * 1024);
          const data = Buffer.concat([Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]);
          if (!chunked.write(data)) await Promise.race([once(chunked, 'drain'), once(chunked, 'close')]);
        }
        chunked.write('0\r\n\r\n');
        // Read until the whole answer is in: by then the server may have read the whole body
        // (and keep the connection), or closed it.
        let chunkedAnswer = '';
        const answered = new Promise<void>((resolve) => {
          chunked.on('data', (d: Buffer) => {
            chunkedAnswer += d.toString('latin1');
            if (/\r\n\r\n\{.*\}$/s.test(chunkedAnswer)) resolve();
          });
          chunked.once('close', () => resolve());
        });
        chunked.resume();
        await answered;
        chunked.destroy();
        expect(chunkedError, url.pathname).toBeUndefined();
        expect(chunkedAnswer, url.pathname).toMatch(/^HTTP\/1\.1 413 /);
        expect(chunkedAnswer).toContain(refusal);
      }
    } finally {
      t.config.maxBundleBytes = limit;
    }
  });

  it('publishes a zip or tar.gz bundle as the folder it holds; a file that is not one, or a zip-slip, publishes nothing', async () => {
    const { key, client, dir } = await appAndFolder('zipped');
    const files = { 'CLAUDE.md': '# zipped\n', 'skills/a/SKILL.md': 'a skill\n' };
    const zip = path.join(dir, 'bundle.zip');
    await fs.writeFile(zip, rawZip(Object.entries(files).map(([name, data]) => ({ name, data }))));
    const v1 = await deployFolder(client, zip, 'zipped');
    expect(v1.version).toMatchObject({ number: 1, fileCount: 2 });
    const gz = path.join(dir, 'bundle.tar.gz');
    await fs.writeFile(gz, await tarGz([{ name: 'CLAUDE.md', data: '# from a tarball\n' }]));
    expect((await deployFolder(client, gz, 'zipped')).version).toMatchObject({ number: 2, fileCount: 1 });
    const url = (await t.call('GET', `/v1/version/download/${v1.version.id}`, { key })).body.data.url;
    expect(Object.fromEntries(Object.entries(await download(url)).map(([k, v]) => [k, v.toString()]))).toEqual(files);

    const notes = path.join(dir, 'notes.txt');
    await fs.writeFile(notes, 'just text\n');
    await expect(deployFolder(client, notes, 'zipped')).rejects.toThrow(/is not a bundle this can publish: the archive is neither a zip nor a tar\.gz file/);
    const slip = path.join(dir, 'slip.zip');
    await fs.writeFile(slip, rawZip([{ name: '../../etc/evil', data: 'x' }]));
    await expect(deployFolder(client, slip, 'zipped')).rejects.toThrow(/is not a bundle this can publish/);
    expect((await t.call('GET', '/v1/app/zipped', { key })).body.data.headVersionId).not.toBe(v1.version.id);
    expect((await t.call('GET', '/v1/version/list?appId=zipped', { key })).body.data.total).toBe(2);
  });

  it('says so when a file changes between hashing and sending, and stores no version', async () => {
    const { key, client, dir } = await appAndFolder('changing');
    await fs.writeFile(path.join(dir, 'a.md'), 'the first words, and more\n');
    await fs.writeFile(path.join(dir, 'b.md'), 'steady\n');
    // Files are read again to be sent (hashing keeps none of them in memory).
    const shrink = (p: DeployProgress) => {
      if (p.phase === 'hashing' && p.done === p.total) writeFileSync(path.join(dir, 'a.md'), 'cut\n');
    };
    await expect(deployFolder(client, dir, 'changing', { onProgress: shrink })).rejects.toThrow(
      /^Uploading 2 files \(a\.md, …\) failed: a\.md changed while it was being deployed .*run deploy again/,
    );
    // Same size, other bytes: the server's own hash check refuses it.
    await fs.writeFile(path.join(dir, 'a.md'), 'AAAA\n');
    const swap = (p: DeployProgress) => {
      if (p.phase === 'hashing' && p.done === p.total) writeFileSync(path.join(dir, 'a.md'), 'BBBB\n');
    };
    await expect(deployFolder(client, dir, 'changing', { onProgress: swap })).rejects.toThrow(/failed \(400\): Rejected 1 archive entry: a\.md \(hash mismatch\)/);
    expect((await t.call('GET', '/v1/app/changing', { key })).body.data.headVersionId).toBeNull();
  });

  it('names the cause when a PUT cannot be made', async () => {
    const { client, dir } = await appAndFolder('unreachable');
    const publicUrl = t.config.publicUrl;
    try {
      await fs.writeFile(path.join(dir, 'AGENTS.md'), 'refused\n');
      // Signed URLs that point at a port nobody listens on (any more).
      const closed = net.createServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const { port } = closed.address() as net.AddressInfo;
      await new Promise((resolve) => closed.close(resolve));
      t.config.publicUrl = `http://127.0.0.1:${port}`;
      await expect(deployFolder(client, dir, 'unreachable')).rejects.toThrow(/^Uploading 1 files \(AGENTS\.md, …\) failed: .*ECONNREFUSED/);
    } finally {
      t.config.publicUrl = publicUrl;
    }
  });

  it('says what is wrong: an invalid settings file, a missing key', async () => {
    const org = await t.org();
    await t.call('POST', '/v1/app/create', { key: org.key, body: { slug: 'broken', type: 'claude' } });
    await write({ '.claude/settings.json': '{not json' });
    const res = await deploy(org.key, 'broken');
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('.claude/settings.json');
    const none = await deploy('', 'broken');
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('HARNESSLAYER_API_KEY');
  });

  it('says what it left out, and refuses a missing folder or one with no files, deploying nothing', async () => {
    const { key, dir } = await appAndFolder('odd');
    await fs.writeFile(path.join(dir, 'AGENTS.md'), '# odd\n');
    await fs.symlink(path.join(dir, 'AGENTS.md'), path.join(dir, 'linked.md'));
    const linked = await deploy(key, 'odd', dir);
    expect(linked.code, linked.stderr).toBe(0);
    expect(linked.stderr).toMatch(/Left out linked\.md: a symbolic link/);
    expect(linked.stdout).toContain('1 files');

    const missing = await deploy(key, 'odd', path.join(dir, 'nope'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/nope is not a folder/);
    const empty = await fs.mkdtemp(path.join(scratch, 'empty-'));
    await fs.writeFile(path.join(empty, '.harnesslayerignore'), '*\n');
    await fs.writeFile(path.join(empty, 'ignored.md'), 'x');
    const nothing = await deploy(key, 'odd', empty);
    expect(nothing.code).toBe(1);
    expect(nothing.stderr).toMatch(/holds no files to deploy/);
    const versions = (await t.call('GET', '/v1/version/list?appId=odd', { key })).body.data;
    expect(versions.total).toBe(1);
  });
});
