import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import ignore from 'ignore';
import { eachLimit } from '../core/concurrency.js';
import type { HarnesslayerClient } from './client.js';

export interface LocalFile {
  /** Relative POSIX path inside the folder: the bundle file name. */
  name: string;
  absolute: string;
  size: number;
  hash: string;
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
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
      const absolute = path.join(dir, entry.name);
      const name = path.relative(root, absolute).split(path.sep).join('/');
      if (rules.ignores(entry.isDirectory() ? `${name}/` : name)) continue;
      if (entry.isDirectory()) await walk(absolute);
      else if (entry.isFile()) out.push({ name, absolute, size: (await fs.stat(absolute)).size });
      // Symbolic links and other special files are not part of a bundle.
    }
  };
  await walk(root);
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

async function hashFile(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

const STREAM_ABOVE = 8 * 1024 * 1024;

function lowerKeys(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
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
  let hashed = 0;
  await eachLimit(listed, 8, async (f) => {
    files.push({ ...f, hash: await hashFile(f.absolute) });
    opts.onProgress?.({ phase: 'hashing', done: ++hashed, total: listed.length, bytes: 0 });
  });
  const byName = new Map(files.map((f) => [f.name, f]));
  const upload = await client.post<{ uploadId: string; versionId: string; uploadUrls: { name: string; url: string; headers: Record<string, string>; exists: boolean }[] }>(
    '/v1/version/upload',
    { appId, files: listed.map((f) => ({ name: f.name, hash: `sha256-${byName.get(f.name)!.hash}` })) },
  );
  const todo = upload.uploadUrls.filter((u) => !u.exists);
  let done = 0;
  let bytes = 0;
  await eachLimit(todo, opts.concurrency ?? 8, async (u) => {
    const file = byName.get(u.name)!;
    // Small files go as one buffer (a streamed body costs far more per request); big ones stream.
    const body = file.size <= STREAM_ABOVE ? await fs.readFile(file.absolute) : (Readable.toWeb(createReadStream(file.absolute)) as ReadableStream);
    const res = await fetch(u.url, {
      method: 'PUT',
      // The URL's own headers (Content-Type among them) are the ones its signature expects.
      headers: { ...lowerKeys({ 'content-type': 'application/octet-stream' }), ...lowerKeys(u.headers), 'content-length': String(file.size) },
      body,
      duplex: 'half',
    } as RequestInit);
    if (!res.ok) throw new Error(`Uploading ${u.name} failed (${res.status}): ${await res.text()}`);
    bytes += file.size;
    opts.onProgress?.({ phase: 'uploading', done: ++done, total: todo.length, bytes });
  });
  const version = await client.post<DeployResult['version']>(`/v1/version/upload/${upload.uploadId}/complete`, { appId, versionId: upload.versionId });
  return { version, uploaded: todo.length, skipped: upload.uploadUrls.length - todo.length };
}
