import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import yauzl from 'yauzl';
import type { TestServer } from '../helpers/server.js';

/** Helpers for the file-storage tests: upload bundles through the real signed URLs. */

export type Bundle = Record<string, string | Buffer>;

export const hex = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
export const ref = (data: string | Buffer) => `sha256-${hex(data)}`;

export function declare(files: Bundle) {
  return Object.entries(files).map(([name, body]) => ({ name, hash: ref(body) }));
}

export interface UploadUrl {
  name: string;
  url: string;
  method: 'PUT';
  headers: Record<string, string>;
  exists: boolean;
}

export async function put(u: UploadUrl, body: string | Buffer): Promise<Response> {
  return fetch(u.url, { method: 'PUT', headers: u.headers, body: typeof body === 'string' ? Buffer.from(body) : body });
}

/** PUTs every file the server does not already have; returns how many were sent. */
export async function putAll(urls: UploadUrl[], files: Bundle): Promise<number> {
  let sent = 0;
  for (const u of urls) {
    if (u.exists) continue;
    const res = await put(u, files[u.name]);
    if (res.status !== 200) throw new Error(`PUT ${u.name} failed: ${res.status} ${await res.text()}`);
    sent++;
  }
  return sent;
}

/** PUTs every file the server does not already have, in one tar to the batch URL; returns how many were sent. */
export async function putAllBatched(batch: BatchUrl, urls: UploadUrl[], files: Bundle): Promise<number> {
  const todo = urls.filter((u) => !u.exists);
  if (todo.length === 0) return 0;
  const res = await putBatch(batch, await tarball(todo.map((u) => ({ name: u.name, data: files[u.name] }))));
  if (res.status !== 200) throw new Error(`batch PUT failed: ${res.status} ${await res.text()}`);
  return todo.length;
}

/** How `deploy` and `commit` send files: each to its own URL (default), or all in one batch PUT. */
export interface SendOptions {
  batch?: boolean;
}

function sendFiles(reply: { uploadUrls: UploadUrl[]; batchUrl?: BatchUrl }, files: Bundle, opts: SendOptions): Promise<number> {
  if (!opts.batch) return putAll(reply.uploadUrls, files);
  if (!reply.batchUrl) throw new Error('this store offers no batch URL');
  return putAllBatched(reply.batchUrl, reply.uploadUrls, files);
}

/** upload → PUT → complete: the new version. */
export async function deploy(t: TestServer, key: string, appId: string, files: Bundle, opts: SendOptions & { versionId?: string } = {}) {
  const up = await t.call('POST', '/v1/version/upload', { key, body: { appId, files: declare(files), ...(opts.versionId ? { versionId: opts.versionId } : {}) } });
  if (up.status !== 200) throw new Error(`upload failed: ${JSON.stringify(up.body)}`);
  await sendFiles(up.body.data, files, opts);
  const done = await t.call('POST', `/v1/version/upload/${up.body.data.uploadId}/complete`, { key, body: { appId, versionId: up.body.data.versionId } });
  if (done.status !== 200) throw new Error(`complete failed: ${JSON.stringify(done.body)}`);
  return done.body.data;
}

/** state upload → PUT → complete; returns the complete reply (status and body). */
export async function commit(t: TestServer, key: string, profileId: string, files: Bundle, opts: SendOptions = {}) {
  const up = await t.call('POST', '/v1/state/upload', { key, body: { profileId, files: declare(files) } });
  if (up.status !== 200) throw new Error(`state upload failed: ${JSON.stringify(up.body)}`);
  await sendFiles(up.body.data, files, opts);
  return t.call('POST', `/v1/state/upload/${up.body.data.uploadId}/complete`, { key, body: { profileId, stateId: up.body.data.stateId } });
}

export async function unzip(data: Buffer): Promise<Record<string, Buffer>> {
  const zip = await yauzl.fromBufferPromise(data, { lazyEntries: true });
  const out: Record<string, Buffer> = {};
  for await (const entry of zip.eachEntry()) {
    const chunks: Buffer[] = [];
    for await (const c of await zip.openReadStreamPromise(entry)) chunks.push(c as Buffer);
    out[entry.fileName] = Buffer.concat(chunks);
  }
  return out;
}

/** Fetches a download URL and unzips it. */
export async function download(url: string): Promise<Record<string, Buffer>> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`download failed: ${res.status} ${await res.text()}`);
  return unzip(Buffer.from(await res.arrayBuffer()));
}

export function asStrings(files: Record<string, Buffer>): Record<string, string> {
  return Object.fromEntries(Object.entries(files).map(([k, v]) => [k, v.toString('utf8')]));
}

/** The contract's treeHash of a bundle. */
export function treeHash(files: Bundle): string {
  const h = createHash('sha256');
  const names = Object.keys(files).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  for (const n of names) h.update(`${n}\0${hex(files[n])}\n`);
  return h.digest('hex');
}

/**
 * A zip written by hand (stored entries), so tests can build archives a well-behaved zip
 * library refuses to write: `../` names, absolute paths, symbolic links, a size in its headers
 * that is not its data's (`declaredSize`; the CRC is always the data's).
 */
export function rawZip(entries: { name: string; data: string | Buffer; mode?: number; declaredSize?: number }[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const data = Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
    const crc = zlib.crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6);
    local.writeUInt32LE(crc, 14);
    const declared = e.declaredSize ?? data.length;
    local.writeUInt32LE(declared, 18);
    local.writeUInt32LE(declared, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(declared, 20);
    central.writeUInt32LE(declared, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(((e.mode ?? 0o100644) << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, data);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** A tar.gz of the entries (type defaults to file). */
export type TarEntry = { name: string; data?: string | Buffer; type?: 'file' | 'symlink' | 'directory'; linkname?: string };

export async function tarGz(entries: TarEntry[]): Promise<Buffer> {
  return zlib.gzipSync(await tarball(entries));
}

/** A tar of the given entries (regular files unless `type` says otherwise), in memory. */
export async function tarball(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    if (e.type === 'symlink' || e.type === 'directory') pack.entry({ name: e.name, type: e.type, linkname: e.linkname });
    else pack.entry({ name: e.name }, typeof e.data === 'string' ? Buffer.from(e.data) : (e.data ?? Buffer.alloc(0)));
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

export interface BatchUrl {
  url: string;
  method: 'PUT';
  headers: Record<string, string>;
}

/** PUTs a tar to an upload's batch URL. */
export async function putBatch(batch: BatchUrl, body: Buffer): Promise<Response> {
  return fetch(batch.url, { method: 'PUT', headers: batch.headers, body });
}
