import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import ignore from 'ignore';
import tar from 'tar-stream';
import { eachLimit } from '../core/concurrency.js';
import type { HarnesslayerClient } from './client.js';
import { HashPool } from './hash-pool.js';

export interface LocalFile {
  /** Relative POSIX path inside the folder: the bundle file name. */
  name: string;
  absolute: string;
  size: number;
  hash: string;
  /** Kept from hashing (files up to 8 MiB, within KEEP_BYTES in all). */
  bytes?: Buffer;
}

/** Files under `folder`, minus `.git`, `node_modules` and what `.harnesslayerignore` excludes (gitignore syntax). */
export async function listFolder(folder: string): Promise<{ name: string; absolute: string; size: number }[]> {
  const root = path.resolve(folder);
  const rules = ignore().add(['.git', 'node_modules', '.harnesslayerignore']);
  try {
    rules.add(await fs.readFile(path.join(root, '.harnesslayerignore'), 'utf8'));
  } catch {
    // No ignore file: every file counts.
  }
  const out: { name: string; absolute: string; size: number }[] = [];
  // All entries are looked at concurrently (libuv queues the stats); the result is sorted below.
  const walk = async (dir: string): Promise<void> => {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    await Promise.all(
      entries.map(async (entry) => {
        const absolute = path.join(dir, entry.name);
        const name = path.relative(root, absolute).split(path.sep).join('/');
        if (rules.ignores(entry.isDirectory() ? `${name}/` : name)) return;
        if (entry.isDirectory()) await walk(absolute);
        else if (entry.isFile()) out.push({ name, absolute, size: (await fs.stat(absolute)).size });
        // Symbolic links and other special files are not part of a bundle.
      }),
    );
  };
  await walk(root);
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Files above this size are streamed (hashing and PUT); smaller ones are read in one call. */
const STREAM_ABOVE = 8 * 1024 * 1024;

/** Bytes read while hashing are kept, up to this much in all, and sent without reading again. */
const KEEP_BYTES = 256 * 1024 * 1024;

/** A file's bytes: those read while hashing (so what is sent is what was hashed) or read now. */
async function bytesOf(file: LocalFile): Promise<Buffer> {
  return file.bytes ?? fs.readFile(file.absolute);
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

/** A tar of the files, entry name = bundle file name, as a stream the request sends as it is made. */
function tarStream(files: LocalFile[]): Readable {
  const pack = tar.pack();
  void (async () => {
    for (const f of files) {
      const bytes = await bytesOf(f);
      pack.entry({ name: f.name, size: bytes.length, mode: 0o644 }, bytes);
    }
    pack.finalize();
  })().catch((err: unknown) => pack.destroy(err as Error));
  return pack as unknown as Readable; // a streamx Readable: pipes and destroys like a Node one
}

function lowerKeys(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
}

/**
 * PUTs a body to a signed URL. node:http rather than fetch: a streamed body through fetch's
 * web streams costs about twice the CPU. Settles with the response, even one that comes
 * before the whole body was sent (a refusal); the rest of the body is then dropped.
 */
function put(url: string, headers: Record<string, string>, body: Buffer | Readable): Promise<{ status: number; text: string }> {
  const target = new URL(url);
  const request = target.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve, reject) => {
    let answered = false;
    const fail = (err: Error) => {
      if (!answered) reject(err);
    };
    const req = request(target, { method: 'PUT', headers }, (res) => {
      answered = true;
      if (!Buffer.isBuffer(body)) body.destroy();
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString() }));
    });
    req.on('error', fail);
    if (Buffer.isBuffer(body)) req.end(body);
    else pipeline(body, req).catch(fail);
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
 * `harnesslayer deploy`: hashes the folder, asks for upload URLs, PUTs only what the server
 * lacks, completes, and returns the new head version.
 */
export async function deployFolder(
  client: HarnesslayerClient,
  folder: string,
  appId: string,
  opts: { concurrency?: number; onProgress?: (p: DeployProgress) => void } = {},
): Promise<DeployResult> {
  const listed = await listFolder(folder);
  const files: LocalFile[] = [];
  let kept = 0; // bytes asked back so far (files up to STREAM_ABOVE, within KEEP_BYTES)
  let hashed = 0;
  const pool = new HashPool(Math.max(1, Math.min(HashPool.DEFAULT_THREADS, listed.length))); // no idle threads for a few files
  try {
    // Two files in flight per thread: the next is queued while one is read.
    await eachLimit(listed, pool.size * 2, async (f) => {
      const keep = f.size <= STREAM_ABOVE && kept + f.size <= KEEP_BYTES;
      if (keep) kept += f.size;
      const { hash, bytes } = await pool.hash(f.absolute, f.size, keep);
      files.push({ ...f, size: bytes?.length ?? f.size, hash, ...(bytes ? { bytes } : {}) });
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
  let done = 0;
  let bytes = 0;
  const sent = (n: number, size: number) => {
    done += n;
    bytes += size;
    opts.onProgress?.({ phase: 'uploading', done, total: todo.length, bytes });
  };
  const send = async (url: string, headers: Record<string, string>, body: Buffer | Readable, size: number | undefined, what: string) => {
    // The URL's own headers (Content-Type among them) are the ones its signature expects.
    const res = await put(url, { 'content-type': 'application/octet-stream', ...lowerKeys(headers), ...(size === undefined ? {} : { 'content-length': String(size) }) }, body).catch(
      (err: Error) => {
        throw new Error(`Uploading ${what} failed: ${err.message}`);
      },
    );
    if (res.status < 200 || res.status > 299) throw new Error(`Uploading ${what} failed (${res.status}): ${res.text}`);
  };
  // Small files travel many to a request when the server offers a batch URL; big ones (and
  // all of them on S3, where each goes straight to the bucket) one per signed URL.
  const batchUrl = upload.batchUrl;
  const inBatch = (f: LocalFile) => batchUrl !== undefined && f.size <= STREAM_ABOVE;
  await eachLimit(batches(todo.map((u) => byName.get(u.name)!).filter(inBatch)), 4, async (batch) => {
    await send(batchUrl!.url, batchUrl!.headers, tarStream(batch), undefined, `${batch.length} files (${batch[0].name}, …)`);
    sent(batch.length, batch.reduce((n, f) => n + f.size, 0));
  });
  const single = todo.filter((u) => !inBatch(byName.get(u.name)!));
  await eachLimit(single, opts.concurrency ?? 8, async (u) => {
    const file = byName.get(u.name)!;
    // Small files go as one buffer (a streamed body costs far more per request); big ones stream.
    const body = file.size <= STREAM_ABOVE ? await bytesOf(file) : createReadStream(file.absolute);
    await send(u.url, u.headers, body, file.size, u.name);
    sent(1, file.size);
  });
  const version = await client.post<DeployResult['version']>(`/v1/version/upload/${upload.uploadId}/complete`, { appId, versionId: upload.versionId });
  return { version, uploaded: todo.length, skipped: upload.uploadUrls.length - todo.length };
}
