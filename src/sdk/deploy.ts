import { closeSync, openSync, readSync } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import ignore from 'ignore';
import { eachLimit } from '../core/concurrency.js';
import type { HarnesslayerClient } from './client.js';
import { withUnpackedBundle } from './bundle-file.js';
import { HashPool } from './hash-pool.js';
import { TAR_END, tarHeader, tarPadding } from './tar.js';

export interface LocalFile {
  /** Relative POSIX path inside the folder: the bundle file name. */
  name: string;
  absolute: string;
  size: number;
  hash: string;
}

/**
 * Files under `folder`, minus `.git`, `node_modules` and what `.harnesslayerignore` excludes
 * (gitignore syntax). Symbolic links and other special files are not part of a bundle: each
 * one left out is passed to `onSkip`.
 */
export async function listFolder(folder: string, onSkip?: (name: string) => void): Promise<{ name: string; absolute: string }[]> {
  const root = path.resolve(folder);
  const stat = await fs.stat(root).catch(() => null);
  if (!stat?.isDirectory()) throw new Error(`${root} is not a folder: give the app's folder (a Claude Code project or an OpenClaw workspace).`);
  const rules = ignore().add(['.git', 'node_modules', '.harnesslayerignore']);
  try {
    rules.add(await fs.readFile(path.join(root, '.harnesslayerignore'), 'utf8'));
  } catch {
    // No ignore file: every file counts.
  }
  const out: { name: string; absolute: string }[] = [];
  // Directories are read concurrently; the result is sorted below. No stat per file: hashing
  // reads each file whole and reports its size.
  const walk = async (dir: string): Promise<void> => {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    await Promise.all(
      entries.map(async (entry) => {
        const absolute = path.join(dir, entry.name);
        const name = path.relative(root, absolute).split(path.sep).join('/');
        if (rules.ignores(entry.isDirectory() ? `${name}/` : name)) return;
        if (entry.isDirectory()) await walk(absolute);
        else if (entry.isFile()) out.push({ name, absolute });
        else onSkip?.(name);
      }),
    );
  };
  await walk(root);
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Files up to this size travel in batches (on the local store); bigger ones to their own URL. */
const BATCH_ABOVE = 8 * 1024 * 1024;

/**
 * The read buffers of a deploy, reused from one chunk to the next: memory touched for the
 * first time costs a page fault per 4 KiB, so a 100 MB folder is not read into 100 MB of
 * fresh buffers. `take` waits while all are in flight, which also paces the reads.
 */
class BufferPool {
  private readonly free: Buffer[];
  private readonly waiting: ((buf: Buffer) => void)[] = [];

  constructor(count: number, size: number) {
    this.free = Array.from({ length: count }, () => Buffer.allocUnsafeSlow(size));
  }

  take(): Promise<Buffer> {
    const buf = this.free.pop();
    return buf ? Promise.resolve(buf) : new Promise((resolve) => this.waiting.push(resolve));
  }

  give(buf: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(buf);
    else this.free.push(buf);
  }
}

/**
 * Writes files into a request: each file is read (synchronously: a CLI, and no thread-pool
 * round trip per chunk) into the pool's buffers, and a buffer goes back to the pool once the
 * request has flushed it, or has closed. With `tar`, each file goes with its tar framing.
 * Stops early once `stopped()` (the server answered before the end).
 */
async function writeFiles(req: http.ClientRequest, files: LocalFile[], pool: BufferPool, stopped: () => boolean, opts: { tar: boolean }): Promise<void> {
  const inFlight = new Set<Buffer>();
  const release = (buf: Buffer) => {
    if (inFlight.delete(buf)) pool.give(buf);
  };
  req.once('close', () => [...inFlight].forEach(release));
  for (const f of files) {
    if (stopped() || req.destroyed) return;
    if (opts.tar) req.write(tarHeader(f.name, f.size));
    const fd = openSync(f.absolute, 'r');
    try {
      for (let offset = 0; offset < f.size; ) {
        const buf = await pool.take();
        if (stopped() || req.destroyed) {
          pool.give(buf);
          return;
        }
        const n = readSync(fd, buf, 0, Math.min(buf.length, f.size - offset), offset);
        if (n === 0) {
          pool.give(buf);
          throw new Error(`${f.name} changed while it was being deployed (it is now shorter than when it was hashed); run deploy again.`);
        }
        offset += n;
        inFlight.add(buf);
        req.write(buf.subarray(0, n), () => release(buf));
      }
    } finally {
      closeSync(fd);
    }
    if (opts.tar) req.write(tarPadding(f.size));
  }
  if (opts.tar) req.end(TAR_END);
  else req.end();
}

/** A batch PUT (the upload's `batchUrl`) carries up to this many bytes or files. */
const BATCH_BYTES = 16 * 1024 * 1024;
const BATCH_FILES = 256;

function batches(files: LocalFile[]): LocalFile[][] {
  const out: LocalFile[][] = [];
  let current: LocalFile[] = [];
  let bytes = 0;
  for (const f of files) {
    if (current.length > 0 && (current.length >= BATCH_FILES || bytes + f.size > BATCH_BYTES)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(f);
    bytes += f.size;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/** The message of an error envelope (our server's), else the body as it came (S3's XML). */
function errorText(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: unknown };
    if (typeof parsed.error === 'string') return parsed.error;
  } catch {
    // not JSON
  }
  return body;
}

function lowerKeys(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
}

/**
 * PUTs to a signed URL, the body written by `write`. node:http rather than fetch: a streamed
 * body through fetch's web streams costs about twice the CPU. Settles with the response, even
 * one that comes before the whole body was sent (a refusal); the writer then stops.
 */
function put(
  url: string,
  headers: Record<string, string>,
  write: (req: http.ClientRequest, stopped: () => boolean) => Promise<void>,
): Promise<{ status: number; text: string }> {
  const target = new URL(url);
  const request = target.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve, reject) => {
    let answered = false;
    let written = false;
    const fail = (err: Error) => {
      if (!answered) reject(err);
    };
    const req = request(target, { method: 'PUT', headers }, (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString() });
        if (!written) req.destroy(); // the rest of the body is not wanted
      });
    });
    req.on('error', fail);
    write(req, () => answered).then(
      () => (written = true),
      (err: Error) => {
        req.destroy();
        fail(err);
      },
    );
  });
}

export interface DeployProgress {
  phase: 'hashing' | 'uploading';
  done: number;
  total: number;
  bytes: number;
}

export interface DeployResult {
  version: { id: string; number: number; fileCount: number; size: number; treeHash: string };
  uploaded: number;
  skipped: number;
}

/**
 * `harnesslayer deploy` (a folder, or a zip or tar.gz bundle of one): hashes the folder, asks for upload URLs, PUTs only what the server
 * lacks, completes, and returns the new head version.
 */
export async function deployFolder(
  client: HarnesslayerClient,
  folder: string,
  appId: string,
  opts: { concurrency?: number; onProgress?: (p: DeployProgress) => void; onSkip?: (name: string) => void } = {},
): Promise<DeployResult> {
  // A zip (or tar.gz) bundle is published as the folder it holds.
  if ((await fs.stat(folder).catch(() => null))?.isFile()) return withUnpackedBundle(folder, (dir) => deployFolder(client, dir, appId, opts));
  const listed = await listFolder(folder, opts.onSkip);
  // A version without files would take every app file out of the profiles at their next sync.
  if (listed.length === 0) throw new Error(`${path.resolve(folder)} holds no files to deploy (after .harnesslayerignore); nothing was deployed.`);
  const files: LocalFile[] = [];
  let hashed = 0;
  const pool = new HashPool(Math.max(1, Math.min(HashPool.DEFAULT_THREADS, listed.length))); // no idle threads for a few files
  try {
    // Two files in flight per thread: the next is queued while one is read.
    await eachLimit(listed, pool.size * 2, async (f) => {
      files.push({ ...f, ...(await pool.hash(f.absolute)) });
      opts.onProgress?.({ phase: 'hashing', done: ++hashed, total: listed.length, bytes: 0 });
    });
  } finally {
    await pool.close();
  }
  const byName = new Map(files.map((f) => [f.name, f]));
  const upload = await client.post<{
    uploadId: string;
    versionId: string;
    uploadUrls: { name: string; url: string; headers: Record<string, string>; exists: boolean }[];
    batchUrl?: { url: string; headers: Record<string, string> };
  }>(
    '/v1/version/upload',
    { appId, files: listed.map((f) => ({ name: f.name, hash: `sha256-${byName.get(f.name)!.hash}` })) },
  );
  const todo = upload.uploadUrls.filter((u) => !u.exists);
  const batchUrl = upload.batchUrl;
  let done = 0;
  let bytes = 0;
  const sent = (n: number, size: number) => {
    done += n;
    bytes += size;
    opts.onProgress?.({ phase: 'uploading', done, total: todo.length, bytes });
  };
  const buffers = new BufferPool(16, 256 * 1024);
  const send = async (url: string, headers: Record<string, string>, files: LocalFile[], tar: boolean, what: string) => {
    // The URL's own headers (Content-Type among them) are the ones its signature expects;
    // a single file's length is known, a batch's tar is sent chunked.
    const length: Record<string, string> = tar ? {} : { 'content-length': String(files[0].size) };
    const write = (req: http.ClientRequest, stopped: () => boolean) => writeFiles(req, files, buffers, stopped, { tar });
    const res = await put(url, { 'content-type': 'application/octet-stream', ...lowerKeys(headers), ...length }, write).catch(
      (err: Error) => {
        throw new Error(`Uploading ${what} failed: ${err.message}`);
      },
    );
    if (res.status < 200 || res.status > 299) throw new Error(`Uploading ${what} failed (${res.status}): ${errorText(res.text)}`);
  };
  // Small files travel many to a request when the server offers a batch URL; big ones (and
  // all of them on S3, where each goes straight to the bucket) one per signed URL.
  const inBatch = (f: LocalFile) => batchUrl !== undefined && f.size <= BATCH_ABOVE;
  await eachLimit(batches(todo.map((u) => byName.get(u.name)!).filter(inBatch)), 4, async (batch) => {
    await send(batchUrl!.url, batchUrl!.headers, batch, true, `${batch.length} files (${batch[0].name}, …)`);
    sent(batch.length, batch.reduce((n, f) => n + f.size, 0));
  });
  const single = todo.filter((u) => !inBatch(byName.get(u.name)!));
  await eachLimit(single, opts.concurrency ?? 8, async (u) => {
    const file = byName.get(u.name)!;
    await send(u.url, u.headers, [file], false, u.name);
    sent(1, file.size);
  });
  const version = await client.post<DeployResult['version']>(`/v1/version/upload/${upload.uploadId}/complete`, { appId, versionId: upload.versionId });
  return { version, uploaded: todo.length, skipped: upload.uploadUrls.length - todo.length };
}
