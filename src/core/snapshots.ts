import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Ctx } from './context.js';
import { parseDownloadUrl, targetFiles, zipStream, type DownloadTarget } from './downloads.js';
import { AppError, BadRequestError } from './errors.js';
import { newId } from './ids.js';
import { findProfile } from './profiles.js';
import { getState, lockProfile, moveHead, nextStateNumber, type StateView } from './states.js';
import { rebaseOnto } from './rebase.js';
import { BundleNames, MAX_FILES, diffOverlay, pathProblem, saveBlobs, saveOverlay, sortByPath, stateFiles, storeBlob, totals, treeHashOf, versionFiles, type TreeEntry } from './trees.js';
import { checkClaudeSettings } from './uploads.js';
import { ArchiveError, detectFormat, readArchive } from '../storage/blobs/archive.js';
import { INLINE_LIMIT } from '../storage/blobs/driver.js';

/**
 * `state/snapshot`: a state from an archive this server stores. The request registers a
 * `materializing` state; the `materialize-snapshot` job checks and extracts the archive,
 * stores its files and makes the state head: as it is when the head is still the one the
 * request saw, else merged onto the head now (rebaseOnto), so nothing written meanwhile is
 * lost. A bad archive leaves the state `failed` with the reason, head unchanged, no file of
 * it stored.
 */

export type SnapshotSource =
  | { type: 'upload'; uploadId: string; index: number; hash: string }
  | { type: 'download'; target: DownloadTarget };

/** Only URLs we signed, unexpired, for an object we store, of the caller's organization. */
async function resolveSource(ctx: Ctx, organizationId: string, storageUrl: string): Promise<SnapshotSource> {
  const refuse = (why: string) =>
    new BadRequestError(`storageUrl is not usable: ${why}. Pass an unexpired upload or download URL issued by this server.`, { field: 'storageUrl' });
  const invalid = 'it is not a valid, unexpired URL signed by this server';
  const download = parseDownloadUrl(ctx, storageUrl);
  if (download) {
    // Another organization's URL reads as an invalid one: genuine or not is not theirs to know.
    if (download.organizationId !== organizationId) throw refuse(invalid);
    await targetFiles(ctx, download).catch(() => {
      throw refuse(`the ${download.kind} it names no longer exists`);
    });
    return { type: 'download', target: download };
  }
  const put = await ctx.blobs.parseUploadUrl(storageUrl, ctx.now());
  if (!put) throw refuse(invalid);
  const upload = await ctx.db.selectFrom('uploads').selectAll().where('id', '=', put.uploadId).executeTakeFirst();
  if (!upload || upload.organizationId !== organizationId || put.index >= upload.files.length) throw refuse('no such upload');
  const staged = await ctx.blobs.readStaged(put.uploadId, put.index);
  if (!staged) throw refuse('nothing was uploaded to it yet');
  staged.destroy();
  return { type: 'upload', uploadId: put.uploadId, index: put.index, hash: upload.files[put.index].hash };
}

export async function requestSnapshot(ctx: Ctx, organizationId: string, input: { profileId: string; storageUrl: string; sandboxId?: string }): Promise<StateView> {
  const profile = await findProfile(ctx.db, organizationId, input.profileId);
  const source = await resolveSource(ctx, organizationId, input.storageUrl);
  const id = newId('state');
  await ctx.db.transaction().execute(async (tx) => {
    const locked = await lockProfile(tx, profile.id);
    await tx
      .insertInto('states')
      .values({
        organizationId,
        id,
        profileId: locked.id,
        appId: locked.appId,
        number: await nextStateNumber(tx, locked.id),
        parentStateId: locked.headStateId,
        baseVersionId: locked.baseVersionId,
        overlayHash: null,
        treeHash: null,
        source: 'snapshot',
        status: 'materializing',
        error: null,
        sandboxId: input.sandboxId ?? null,
        createdAt: ctx.now(),
      })
      .execute();
    await ctx.queue.send('materialize-snapshot', { organizationId, stateId: id, source }, { tx });
  });
  return getState(ctx, organizationId, id);
}

async function openSource(ctx: Ctx, source: SnapshotSource): Promise<Readable> {
  if (source.type === 'upload') {
    const staged = await ctx.blobs.readStaged(source.uploadId, source.index);
    if (!staged) throw new ArchiveError('the uploaded archive is no longer stored');
    return staged;
  }
  const { files, createdAt } = await targetFiles(ctx, source.target);
  return zipStream(ctx, files, createdAt);
}

/** Copies the archive to a temp file (bounded, and hash-checked for uploads). */
async function fetchArchive(ctx: Ctx, source: SnapshotSource, file: string): Promise<void> {
  const hasher = createHash('sha256');
  let size = 0;
  const limit = ctx.config.maxBundleBytes;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      size += chunk.length;
      if (size > limit) return done(new ArchiveError(`the archive is larger than ${limit} bytes`));
      hasher.update(chunk);
      done(null, chunk);
    },
  });
  await pipeline(await openSource(ctx, source), meter, createWriteStream(file));
  if (source.type === 'upload' && hasher.digest('hex') !== source.hash) {
    throw new ArchiveError('the uploaded archive does not match the hash declared for it');
  }
}

/** Attempts of a snapshot job before it gives up: the queue retries one whose worker died. */
const SNAPSHOT_ATTEMPTS = 3;

async function failSnapshot(ctx: Ctx, state: { organizationId: string; id: string }, reason: string): Promise<void> {
  await ctx.db
    .updateTable('states')
    .set({ status: 'failed', error: `The snapshot could not be materialized: ${reason}` })
    .where('organizationId', '=', state.organizationId)
    .where('id', '=', state.id)
    .where('status', '=', 'materializing')
    .execute();
}

/** The materialize-snapshot job. Idempotent: a state that is no longer materializing is left alone. */
export async function materializeSnapshot(ctx: Ctx, job: { organizationId: string; stateId: string; source: SnapshotSource; attempt?: number }): Promise<void> {
  const state = await ctx.db.selectFrom('states').selectAll().where('organizationId', '=', job.organizationId).where('id', '=', job.stateId).executeTakeFirst();
  if (!state || state.status !== 'materializing') return;
  const stage = `snapshot-${state.id}`;
  if ((job.attempt ?? 1) > SNAPSHOT_ATTEMPTS) {
    // This job never fails on its own (any error fails the state): each earlier attempt died
    // with its worker. A fourth would likely die as they did.
    await failSnapshot(ctx, state, `its worker stopped during each of ${SNAPSHOT_ATTEMPTS} attempts (an archive too large to unpack on this server, say). Nothing was registered; try a smaller archive.`);
    await ctx.blobs.discardStage(stage, 0).catch(() => undefined);
    return;
  }
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-snapshot-'));
  try {
    const archive = path.join(dir, 'archive');
    await fetchArchive(ctx, job.source, archive);
    const files: (TreeEntry & { bytes?: Buffer })[] = [];
    const limits = { maxFiles: MAX_FILES, maxBytes: ctx.config.maxBundleBytes, pathProblem, names: () => new BundleNames() };
    await readArchive(archive, await detectFormat(archive), limits, async (filePath, size, body) => {
      const index = files.length;
      const hasher = createHash('sha256');
      const small: Buffer[] = [];
      const tap = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hasher.update(chunk);
          if (size <= INLINE_LIMIT) small.push(chunk);
          done(null, chunk);
        },
      });
      // Unpacked to a file first, whole and checked (a corrupt, truncated or oversized entry
      // fails here), then staged from it: a store's write (an S3 PUT of a declared length)
      // never sees a stream that breaks off or ends short.
      const unpacked = path.join(dir, 'entry');
      await pipeline(body, tap, createWriteStream(unpacked));
      await ctx.blobs.putStaged(stage, index, () => createReadStream(unpacked), size);
      files.push({ path: filePath, hash: hasher.digest('hex'), size, ...(size <= INLINE_LIMIT ? { bytes: Buffer.concat(small) } : {}) });
    });
    const app = await ctx.db.selectFrom('apps').select('type').where('id', '=', state.appId).executeTakeFirstOrThrow();
    await checkClaudeSettings(ctx, app, files, stage);
    await ctx.db.transaction().execute(async (tx) => {
      await saveBlobs(tx, ctx.blobs, files);
      for (const [i, f] of files.entries()) await ctx.blobs.promoteStaged(stage, i, f.hash);
      let entries: TreeEntry[] = files.map((f) => ({ path: f.path, hash: f.hash, size: f.size }));
      let baseVersionId = state.baseVersionId;
      // Compare-and-set against the head the request saw (the state's parent). When another
      // writer (a run, a sync, an upload) moved it meanwhile, the snapshot's changes are
      // merged onto the head now, as a run's are: nothing either side wrote is lost.
      const profile = await lockProfile(tx, state.profileId);
      if (profile.headStateId !== state.parentStateId) {
        const filesOf = async (id: string | null) => {
          const s = id ? await tx.selectFrom('states').select(['organizationId', 'baseVersionId', 'overlayHash']).where('organizationId', '=', state.organizationId).where('id', '=', id).executeTakeFirst() : undefined;
          return new Map((s ? await stateFiles(tx, s) : []).map((f) => [f.path, f]));
        };
        const merged = await rebaseOnto(ctx, tx, await filesOf(state.parentStateId), new Map(entries.map((e) => [e.path, e])), await filesOf(profile.headStateId));
        for (const f of merged.values()) if (f.bytes) await storeBlob(ctx, tx, f.path, f.bytes);
        entries = sortByPath([...merged.values()].map(({ path: p, hash, size }) => ({ path: p, hash, size })));
        baseVersionId = profile.baseVersionId;
      }
      const overlay = diffOverlay(await versionFiles(tx, state.organizationId, baseVersionId), entries);
      const overlayHash = await saveOverlay(tx, overlay);
      const updated = await tx
        .updateTable('states')
        .set({ baseVersionId, overlayHash, treeHash: treeHashOf(entries), ...totals(entries), status: 'ready' })
        .where('organizationId', '=', state.organizationId)
        .where('id', '=', state.id)
        .where('status', '=', 'materializing')
        .executeTakeFirst();
      if (updated.numUpdatedRows > 0n) await moveHead(ctx, tx, profile, { id: state.id, baseVersionId });
    });
  } catch (err) {
    const reason = err instanceof ArchiveError || err instanceof AppError ? err.message : `internal error: ${(err as Error).message}`;
    await failSnapshot(ctx, state, reason).catch(() => undefined);
  } finally {
    await ctx.blobs.discardStage(stage, 0).catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  }
}
