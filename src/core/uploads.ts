import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { eachLimit } from './concurrency.js';
import type { Ctx } from './context.js';
import { AppError, BadRequestError, ConflictError, NotFoundError, PayloadTooLargeError } from './errors.js';
import { newId } from './ids.js';
import { BundleNames, MAX_FILES, hashRef, lockBlobs, parseHash, pathProblem, saveBlobs, type TreeEntry } from './trees.js';
import { HashMismatchError, INLINE_LIMIT, TooLargeError } from '../storage/blobs/driver.js';
import type { LocalBlobStore } from '../storage/blobs/local.js';
import type { Tx } from '../storage/db.js';
import { isUniqueViolation } from '../storage/pg-errors.js';
import type { App, Upload, UploadFile } from '../storage/schema.js';

/**
 * Uploads: the client declares `files: [{name, hash}]`, PUTs each file to its signed URL
 * (staged under the upload), then `complete` checks every file and registers the version
 * or state in one transaction. Shared by versions.ts and states.ts.
 */

export const URL_TTL_MS = 15 * 60 * 1000;
export const UPLOAD_TTL_MS = 24 * 60 * 60 * 1000;
const CLAUDE_SETTINGS = '.claude/settings.json';

export interface UploadReply {
  uploadId: string;
  expiresAt: string;
  uploadUrls: { name: string; url: string; method: 'PUT'; headers: Record<string, string>; exists: boolean }[];
  /** Local blob store only: one URL that takes a tar of many of the files (see receiveBatch). */
  batchUrl?: { url: string; method: 'PUT'; headers: Record<string, string> };
}

/** Checks the declared files: valid paths, hashes, no duplicates, no file that is also a folder. Returns them with hex hashes. */
export function checkDeclaredFiles(files: { name: string; hash: string }[]): { name: string; hash: string }[] {
  if (files.length > MAX_FILES) throw new BadRequestError(`A bundle holds at most ${MAX_FILES} files; got ${files.length}.`);
  const problems: { name: string; problem: string }[] = [];
  const names = new BundleNames();
  const out = files.map((f) => {
    const problem = pathProblem(f.name);
    if (problem) problems.push({ name: f.name, problem: `file name ${problem}` });
    else {
      const clash = names.add(f.name);
      if (clash) problems.push({ name: f.name, problem: clash === 'appears twice' ? 'duplicate file name' : `file name ${clash}` });
    }
    const hash = parseHash(f.hash);
    if (!hash) problems.push({ name: f.name, problem: 'hash must be sha256-<64 hex>, sha256-<base64> or 64 hex characters' });
    return { name: f.name, hash: hash ?? '' };
  });
  if (problems.length > 0) {
    const first = problems[0];
    throw new BadRequestError(`Invalid file ${JSON.stringify(first.name.slice(0, 200))}: ${first.problem}.`, problems.slice(0, 100));
  }
  return out;
}

/** Opens an upload and signs one URL per file. `exists` only for content the organization already references. */
export async function openUpload(
  ctx: Ctx,
  input: Pick<Upload, 'organizationId' | 'kind' | 'appId' | 'profileId' | 'targetId' | 'expectedHeadStateId' | 'expectedHeadSeq'>,
  files: { name: string; hash: string }[],
  existing: Set<string>,
): Promise<UploadReply> {
  const id = newId('upload');
  const now = ctx.now();
  const recorded: UploadFile[] = files.map((f) => ({ name: f.name, hash: f.hash, exists: existing.has(f.hash) }));
  try {
    await ctx.db.transaction().execute(async (tx) => {
      // An expired upload no longer holds its id.
      await tx
        .deleteFrom('uploads')
        .where('organizationId', '=', input.organizationId)
        .where('kind', '=', input.kind)
        .where('targetId', '=', input.targetId)
        .where('status', '=', 'open')
        .where('expiresAt', '<', now)
        .execute();
      await tx
        .insertInto('uploads')
        .values({ ...input, id, files: JSON.stringify(recorded), status: 'open', registeredId: null, expiresAt: new Date(now.getTime() + UPLOAD_TTL_MS), createdAt: now })
        .execute();
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw new ConflictError(`The ${input.kind} id "${input.targetId}" is already in use by another upload.`);
    throw err;
  }
  const urlExpiry = new Date(now.getTime() + URL_TTL_MS);
  const uploadUrls = await Promise.all(
    recorded.map(async (f, index) => {
      const { url, headers } = await ctx.blobs.uploadUrl({ uploadId: id, index, hash: f.hash, expiresAt: urlExpiry });
      return { name: f.name, url, method: 'PUT' as const, headers, exists: f.exists };
    }),
  );
  const batch = await ctx.blobs.batchUploadUrl?.({ uploadId: id, expiresAt: urlExpiry });
  await sweepExpiredUploads(ctx, 20);
  return { uploadId: id, expiresAt: urlExpiry.toISOString(), uploadUrls, ...(batch ? { batchUrl: { ...batch, method: 'PUT' as const } } : {}) };
}

/**
 * The upload a signed PUT stores into: 404 once it is gone or expired, 409 once registered
 * (its files can no longer change, and a staged file would only wait for the sweep). On
 * either, the unread body is drained.
 */
export async function receivingUpload(ctx: Ctx, uploadId: string, body: Readable): Promise<void> {
  // Not the declared files: a single PUT needs none of them, and they can be 10,000.
  const upload = await ctx.db.selectFrom('uploads').select(['expiresAt', 'status', 'kind', 'registeredId']).where('id', '=', uploadId).executeTakeFirst();
  if (!upload || upload.expiresAt.getTime() < ctx.now().getTime()) {
    body.resume();
    throw new NotFoundError('upload', uploadId);
  }
  if (upload.status === 'registered') {
    body.resume();
    throw new ConflictError(`Upload "${uploadId}" is already complete (${upload.kind} "${upload.registeredId}"); nothing was stored. Start a new upload to change files.`);
  }
}

/**
 * After a PUT stored its bytes: its upload may have gone while the body streamed (swept, or its
 * app or profile deleted). What the PUT staged would then have no row left to clean it up, so
 * it is discarded here and the PUT answers 404. A deletion that starts after this check still
 * finds the staged files: deletions discard a staging area after removing its row too
 * (discardUpload).
 */
export async function receivedUpload(ctx: Ctx, uploadId: string): Promise<void> {
  const row = await ctx.db.selectFrom('uploads').select('id').where('id', '=', uploadId).executeTakeFirst();
  if (row) return;
  await ctx.blobs.discardStage(uploadId, 0);
  throw new NotFoundError('upload', uploadId);
}

/**
 * Removes an upload and its staging area: discarded before the row goes (a crash leaves the
 * row to retry with) and once more after it (a PUT that checked the row just before it went
 * may have staged meanwhile; see receivedUpload).
 */
export async function discardUpload(ctx: Ctx, upload: { id: string; files: unknown[] }): Promise<void> {
  await ctx.blobs.discardStage(upload.id, upload.files.length);
  await ctx.db.deleteFrom('uploads').where('id', '=', upload.id).execute();
  await ctx.blobs.discardStage(upload.id, upload.files.length);
}

export interface BatchResult {
  stored: number;
  mismatched: { name: string; expected: string; actual: string }[];
  unknown: string[];
}

/**
 * The batch URL's PUT: a tar whose entries are declared files of the upload (entry name =
 * file name). Each entry is verified against its declared hash exactly as its own PUT would
 * be: a matching one is staged, a mismatching one stores nothing. Entries that are not
 * regular files or not declared are skipped and reported. The archive's names are only
 * looked up among the declared ones, never used as paths. The staged files of one batch are
 * one pack file (storage/blobs/packs.ts); the entries before a broken or refused one stay
 * staged.
 */
export async function receiveBatch(ctx: Ctx, store: LocalBlobStore, uploadId: string, body: Readable): Promise<BatchResult> {
  await receivingUpload(ctx, uploadId, body);
  const upload = await ctx.db.selectFrom('uploads').select('files').where('id', '=', uploadId).executeTakeFirst();
  if (!upload) throw new NotFoundError('upload', uploadId); // swept in between
  const declared = new Map(upload.files.map((f, index) => [f.name, { index, hash: f.hash }]));
  const limit = ctx.config.maxBundleBytes;
  const result: BatchResult = { stored: 0, mismatched: [], unknown: [] };
  const pack = await store.openPack(uploadId);
  const check = async (name: string, hash: string, write: () => Promise<unknown>) => {
    try {
      await write();
      result.stored++;
    } catch (err) {
      if (!(err instanceof HashMismatchError)) throw err;
      result.mismatched.push({ name, expected: hashRef(hash), actual: hashRef(err.actual) });
    }
  };
  const extract = tar.extract();
  const entries = (async () => {
    let total = 0;
    let count = 0;
    for await (const entry of extract) {
      const { name, type, size = 0 } = entry.header;
      const file = declared.get(name);
      if (++count > upload.files.length + 100) throw new BadRequestError(`The archive holds more entries than the upload declares files (${upload.files.length}).`);
      total += size;
      if (total > limit) throw new PayloadTooLargeError(`The entries of this archive exceed the bundle limit of ${limit} bytes; nothing more was stored.`);
      if (type !== 'file' || !file) {
        if (result.unknown.length < 100) result.unknown.push(name);
        for await (const _ of entry); // tar-stream entries are streamx streams: drain by iterating
        continue;
      }
      // Appended as it streams, never gathered in memory: no copy, and less for the collector.
      await check(name, file.hash, () => pack.addStream(file.index, file.hash, entry as AsyncIterable<Buffer>, limit));
    }
  })();
  const feed = pipeline(body, extract);
  try {
    await Promise.all([entries, feed]);
  } catch (err) {
    extract.destroy();
    body.resume();
    await Promise.allSettled([entries, feed]);
    await pack.finish().catch(() => undefined); // the error below says more than a failed index
    if (err instanceof AppError) throw err;
    if (err instanceof TooLargeError) throw new PayloadTooLargeError(`A file may hold at most ${limit} bytes; nothing more was stored.`);
    if ((err as NodeJS.ErrnoException).syscall) throw err; // the store failed, not the client
    throw new BadRequestError(`The body is not a complete tar archive (${(err as Error).message}); the files before this point were stored.`);
  }
  await pack.finish();
  await receivedUpload(ctx, uploadId);
  return result;
}

/** An upload of this organization and kind; 404 for anything else (never reveal another tenant's). */
export async function findUpload(ctx: Ctx, organizationId: string, kind: Upload['kind'], where: { id?: string; targetId?: string }): Promise<Upload> {
  let q = ctx.db.selectFrom('uploads').selectAll().where('organizationId', '=', organizationId).where('kind', '=', kind);
  if (where.id !== undefined) q = q.where('id', '=', where.id);
  if (where.targetId !== undefined) q = q.where('targetId', '=', where.targetId);
  const upload = await q.executeTakeFirst();
  if (!upload) throw new NotFoundError('upload', where.id ?? where.targetId);
  return upload;
}

export function assertOpen(ctx: Ctx, upload: Upload): void {
  if (upload.status === 'open' && upload.expiresAt.getTime() < ctx.now().getTime()) {
    throw new AppError(404, 'not_found', `upload "${upload.id}" has expired (uploads stay open 24 h); start a new upload.`);
  }
}

/**
 * Why a complete's file check failed, when the reason is not the files: a concurrent complete
 * registered the upload meanwhile (and discarded its staging area), so the id it registered;
 * or the upload, its app or its profile went away meanwhile (404). Null: the files it named
 * are really missing, and the check's 400 stands.
 */
async function settledMeanwhile(ctx: Ctx, upload: Upload): Promise<string | null> {
  const now = await ctx.db.selectFrom('uploads').select(['status', 'registeredId']).where('id', '=', upload.id).executeTakeFirst();
  if (!now) throw new NotFoundError('upload', upload.id);
  if (now.status === 'registered') return now.registeredId!;
  const app = await ctx.db.selectFrom('apps').select('status').where('id', '=', upload.appId).executeTakeFirst();
  if (app?.status !== 'active') throw new NotFoundError('app', upload.appId);
  if (upload.profileId) {
    const profile = await ctx.db.selectFrom('profiles').select('status').where('id', '=', upload.profileId).executeTakeFirst();
    if (profile?.status !== 'active') throw new NotFoundError('profile', upload.profileId);
  }
  return null;
}

/** checkUploadedFiles for a complete, or the id a concurrent complete registered meanwhile (settledMeanwhile). */
export async function checkForComplete(ctx: Ctx, upload: Upload, app: App): Promise<CheckedFile[] | { registeredId: string }> {
  try {
    return await checkUploadedFiles(ctx, upload, app);
  } catch (err) {
    const registeredId = await settledMeanwhile(ctx, upload);
    if (registeredId) return { registeredId };
    throw err;
  }
}

export interface CheckedFile extends TreeEntry {
  /** PUT to this upload (else: skipped because the content already existed). */
  staged: boolean;
  bytes?: Buffer;
  /** The staged object's version when it was verified. */
  tag?: string;
}

/**
 * Checks every declared file before anything is registered: PUT files are verified against
 * their hash (a mismatching one is discarded), skipped ones must be `exists`. 400 lists what
 * is missing or wrong; the upload stays open for another PUT and complete.
 */
export async function checkUploadedFiles(ctx: Ctx, upload: Upload, app: App): Promise<CheckedFile[]> {
  const files = upload.files;
  const checked: (CheckedFile | undefined)[] = new Array(files.length);
  const missing: string[] = [];
  const mismatched: { name: string; expected: string; actual: string }[] = [];
  await eachLimit(files, 16, async (f, i) => {
    const res = await ctx.blobs.verifyStaged(upload.id, i, f.hash, INLINE_LIMIT);
    if (res.status === 'ok') checked[i] = { path: f.name, hash: f.hash, size: res.size, staged: true, bytes: res.bytes, tag: res.tag };
    else if (res.status === 'mismatch') mismatched.push({ name: f.name, expected: hashRef(f.hash), actual: hashRef(res.actualHash) });
    else if (f.exists) checked[i] = { path: f.name, hash: f.hash, size: -1, staged: false };
    else missing.push(f.name);
  });
  if (missing.length > 0 || mismatched.length > 0) {
    const names = [...missing.map((n) => `${n} (missing)`), ...mismatched.map((m) => `${m.name} (hash mismatch)`)];
    throw new BadRequestError(
      `The upload is incomplete: ${names.slice(0, 20).join(', ')}${names.length > 20 ? `, and ${names.length - 20} more` : ''}. PUT these files and complete again.`,
      { missing, mismatched },
    );
  }
  const result = checked as CheckedFile[];
  // Sizes of skipped files come from their blob rows.
  const skipped = result.filter((f) => !f.staged);
  if (skipped.length > 0) {
    const rows = await ctx.db.selectFrom('blobs').select(['hash', 'size']).where('hash', 'in', [...new Set(skipped.map((f) => f.hash))]).execute();
    const sizes = new Map(rows.map((r) => [r.hash, Number(r.size)]));
    for (const f of skipped) f.size = sizes.get(f.hash) ?? 0;
  }
  const total = result.reduce((n, f) => n + f.size, 0);
  if (total > ctx.config.maxBundleBytes) {
    throw new PayloadTooLargeError(`The bundle holds ${total} bytes; the limit is ${ctx.config.maxBundleBytes}.`);
  }
  await checkClaudeSettings(ctx, app, result, upload.id);
  return result;
}

/** For claude apps, `.claude/settings.json` must be valid JSON. */
export async function checkClaudeSettings(ctx: Pick<Ctx, 'db' | 'blobs'>, app: Pick<App, 'type'>, files: (TreeEntry & { bytes?: Buffer; staged?: boolean })[], stage?: string): Promise<void> {
  if (app.type !== 'claude') return;
  const index = files.findIndex((f) => f.path === CLAUDE_SETTINGS);
  if (index < 0) return;
  const f = files[index];
  const bytes = f.bytes ?? (await readAll(f.staged === false || stage === undefined ? await ctx.blobs.get(f.hash) : (await ctx.blobs.readStaged(stage, index))!));
  try {
    JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new BadRequestError(`${CLAUDE_SETTINGS} is not valid JSON: ${(err as Error).message}`, { file: CLAUDE_SETTINGS });
  }
}

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/**
 * In the registering transaction: locks the upload (a concurrent complete of the same upload
 * waits, then sees it registered), and records and locks the blobs. Returns the registered id
 * when the upload was already registered. The staged files reach the store only in
 * `markRegistered`, once nothing can refuse the version or state any more.
 */
export async function claimUpload(ctx: Ctx, tx: Tx, upload: Upload, files: CheckedFile[]): Promise<string | null> {
  const row = await tx.selectFrom('uploads').select(['status', 'registeredId']).where('id', '=', upload.id).forUpdate().executeTakeFirst();
  if (!row) throw new NotFoundError('upload', upload.id);
  if (row.status === 'registered') return row.registeredId;
  const staged = files.filter((f) => f.staged);
  await saveBlobs(tx, ctx.blobs, staged.map((f) => ({ hash: f.hash, size: f.size, bytes: f.bytes })));
  const skipped = files.filter((f) => !f.staged);
  if (skipped.length > 0) {
    const present = await lockBlobs(tx, skipped.map((f) => f.hash));
    const gone = skipped.filter((f) => !present.has(f.hash)).map((f) => f.path);
    if (gone.length > 0) throw new BadRequestError(`The upload is incomplete: ${gone.slice(0, 20).join(', ')} (missing). PUT these files and complete again.`, { missing: gone, mismatched: [] });
  }
  return null;
}

/**
 * The last step of the registering transaction: copies the staged files to their content
 * address and marks the upload registered. Last, so a complete refused on the way (409
 * head_moved) leaves nothing in the store that no row accounts for. Still under the blob
 * row locks of claimUpload: a collection running now cannot delete what we promote.
 */
export async function markRegistered(ctx: Ctx, tx: Tx, upload: Upload, files: CheckedFile[], registeredId: string): Promise<void> {
  await eachLimit(upload.files, 16, async (f, i) => {
    if (files[i].staged) await ctx.blobs.promoteStaged(upload.id, i, f.hash, files[i].tag);
  });
  await tx.updateTable('uploads').set({ status: 'registered', registeredId }).where('id', '=', upload.id).execute();
}

/** After the registering transaction: the staged copies are no longer needed. */
export async function discardStaged(ctx: Ctx, upload: Upload): Promise<void> {
  // Best effort: a leftover staging area is removed again when the upload row expires.
  await ctx.blobs.discardStage(upload.id, upload.files.length).catch(() => undefined);
}

/** Removes uploads past their 24 h, with their staged files (bounded per call). */
export async function sweepExpiredUploads(ctx: Ctx, limit: number): Promise<number> {
  const expired = await ctx.db.selectFrom('uploads').select(['id', 'files']).where('expiresAt', '<', ctx.now()).limit(limit).execute();
  for (const u of expired) await discardUpload(ctx, u);
  return expired.length;
}
