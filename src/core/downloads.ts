import { PassThrough, type Readable } from 'node:stream';
import yazl from 'yazl';
import type { Ctx } from './context.js';
import { AppError, ConflictError, ForbiddenError, NotFoundError, StorageUnavailableError } from './errors.js';
import { findState } from './states.js';
import { readTree, stateFiles, type TreeEntry } from './trees.js';
import { findVersion } from './versions.js';

/**
 * Download URLs: `${publicUrl}/v1/download/<token>`, the token an HMAC-signed (kind,
 * organization, id, expiry). Served by our own public route as a zip streamed from the
 * blob store, for either driver.
 */

export const DOWNLOAD_TTL_MS = 15 * 60 * 1000;

export interface DownloadTarget {
  kind: 'version' | 'state';
  organizationId: string;
  id: string;
}

function encodeToken(ctx: Ctx, t: DownloadTarget, exp: number): string {
  const payload = Buffer.from(JSON.stringify({ k: t.kind, o: t.organizationId, i: t.id, e: exp })).toString('base64url');
  return `${payload}.${ctx.secrets.sign(`download\n${payload}`)}`;
}

export async function versionDownload(ctx: Ctx, organizationId: string, versionId: string) {
  const v = await findVersion(ctx.db, organizationId, versionId);
  return issue(ctx, { kind: 'version', organizationId, id: v.id });
}

export async function stateDownload(ctx: Ctx, organizationId: string, stateId: string) {
  const s = await findState(ctx.db, organizationId, stateId);
  if (s.status !== 'ready') throw new ConflictError(`State "${s.id}" is ${s.status}; it has no files to download.`);
  return issue(ctx, { kind: 'state', organizationId, id: s.id });
}

function issue(ctx: Ctx, target: DownloadTarget): { url: string; expiresAt: string } {
  const expiresAt = new Date(ctx.now().getTime() + DOWNLOAD_TTL_MS);
  const token = encodeToken(ctx, target, Math.floor(expiresAt.getTime() / 1000));
  return { url: `${ctx.config.publicUrl}/v1/download/${token}`, expiresAt: expiresAt.toISOString() };
}

/** What a token names; 403 when altered or expired. */
export function parseDownloadToken(ctx: Ctx, token: string): DownloadTarget {
  const [payload, sig, extra] = token.split('.');
  if (!payload || !sig || extra !== undefined || !ctx.secrets.verify(`download\n${payload}`, sig)) {
    throw new ForbiddenError('This download URL is invalid or was altered.');
  }
  const t = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { k: 'version' | 'state'; o: string; i: string; e: number };
  if (t.e * 1000 < ctx.now().getTime()) throw new AppError(403, 'forbidden', 'This download URL has expired; ask for a new one.');
  return { kind: t.k, organizationId: t.o, id: t.i };
}

/** The download URL a `storageUrl` is, if it is one of ours and valid. */
export function parseDownloadUrl(ctx: Ctx, url: string): DownloadTarget | null {
  const prefix = `${ctx.config.publicUrl}/v1/download/`;
  if (!url.startsWith(prefix)) return null;
  try {
    return parseDownloadToken(ctx, url.slice(prefix.length));
  } catch {
    return null;
  }
}

/** The files a download target holds (404 once the version or state is gone). */
export async function targetFiles(ctx: Ctx, t: DownloadTarget): Promise<{ files: TreeEntry[]; createdAt: Date }> {
  if (t.kind === 'version') {
    const v = await findVersion(ctx.db, t.organizationId, t.id);
    return { files: await readTree(ctx.db, v.treeHash), createdAt: v.createdAt };
  }
  const s = await findState(ctx.db, t.organizationId, t.id);
  if (s.status !== 'ready') throw new NotFoundError('state', t.id);
  return { files: await stateFiles(ctx.db, s), createdAt: s.createdAt };
}

/**
 * A file's name in a download's zip. A name that starts like a drive letter (`c:notes.txt`) is
 * a valid relative path of a bundle, but the zip format forbids drive letters, and yazl refuses
 * it as an absolute path. It goes as `./c:notes.txt`: unzip tools extract that to the same
 * name, and a snapshot of the zip reads it back as `c:notes.txt` (storage/blobs/archive.ts).
 */
function zipName(path: string): string {
  return /^[a-zA-Z]:/.test(path) ? `./${path}` : path;
}

/** A zip of the files, streamed: each blob is opened only when the zip reaches it. */
export async function zipStream(ctx: Ctx, files: TreeEntry[], mtime: Date): Promise<Readable> {
  // The first file is opened before anything is sent: a blob store that does not answer is a
  // 503 the client can retry, not a 200 whose zip breaks off.
  const first =
    files.length > 0
      ? await ctx.blobs.get(files[0].hash).catch((err: Error) => {
          throw new StorageUnavailableError(`The blob store could not be read (${err.message}); nothing was sent. Try again shortly.`);
        })
      : undefined;
  const zip = new yazl.ZipFile();
  const out = new PassThrough();
  // A blob that cannot be read later ends the response with an error (a truncated zip), never a hang.
  zip.on('error', (err: Error) => out.destroy(err));
  zip.outputStream.pipe(out);
  for (const [i, f] of files.entries()) {
    zip.addReadStreamLazy(zipName(f.path), { mtime, mode: 0o100644, size: f.size }, (cb) => {
      if (i === 0 && first) return cb(null, first);
      ctx.blobs.get(f.hash).then(
        (stream) => cb(null, stream),
        (err: Error) => cb(err, undefined as never),
      );
    });
  }
  zip.end();
  return out;
}
