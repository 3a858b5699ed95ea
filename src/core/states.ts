import { sql } from 'kysely';
import type { Ctx } from './context.js';
import { ConflictError, NotFoundError } from './errors.js';
import { newId } from './ids.js';
import { paginate, type PageParams } from './pagination.js';
import { findProfile } from './profiles.js';
import { diffOverlay, hashRef, saveOverlay, stateFiles, totals, treeHashOf, versionFiles, type TreeEntry } from './trees.js';
import { assertOpen, checkDeclaredFiles, checkForComplete, claimUpload, discardStaged, findUpload, markRegistered, openUpload } from './uploads.js';
import { referencedByOrganization } from './trees.js';
import type { Db, Tx } from '../storage/db.js';
import type { Profile, State, StateSource, Upload } from '../storage/schema.js';

/** A profile's states: immutable commits on its branch; the profile head moves by compare-and-set. */

export function stateView(s: State, headStateId: string | null, files?: TreeEntry[]) {
  return {
    id: s.id,
    profileId: s.profileId,
    number: s.number,
    parentStateId: s.parentStateId,
    baseVersionId: s.baseVersionId,
    source: s.source,
    status: s.status,
    ...(s.error ? { error: s.error } : {}),
    fileCount: s.fileCount,
    size: Number(s.size),
    treeHash: s.treeHash,
    isHead: s.id === headStateId,
    createdAt: s.createdAt.toISOString(),
    ...(files ? { files: files.map((f) => ({ name: f.path, hash: hashRef(f.hash), size: f.size })) } : {}),
  };
}

export type StateView = ReturnType<typeof stateView>;

/** A state of this organization whose profile (and app) is active; 404 otherwise. */
export async function findState(db: Db, organizationId: string, id: string, profileId?: string): Promise<State & { headStateId: string | null }> {
  let q = db
    .selectFrom('states as s')
    .innerJoin('profiles as p', 'p.id', 's.profileId')
    .innerJoin('apps as a', 'a.id', 'p.appId')
    .selectAll('s')
    .select('p.headStateId')
    .where('s.organizationId', '=', organizationId)
    .where('s.id', '=', id)
    .where('p.status', '=', 'active')
    .where('a.status', '=', 'active');
  if (profileId) q = q.where('s.profileId', '=', profileId);
  const s = await q.executeTakeFirst();
  if (!s) throw new NotFoundError('state', id);
  return s;
}

export async function getState(ctx: Ctx, organizationId: string, id: string): Promise<StateView> {
  const s = await findState(ctx.db, organizationId, id);
  return stateView(s, s.headStateId, s.status === 'ready' ? await stateFiles(ctx.db, s) : []);
}

export async function listStates(ctx: Ctx, organizationId: string, params: PageParams & { profileId: string }) {
  const profile = await findProfile(ctx.db, organizationId, params.profileId);
  const q = ctx.db.selectFrom('states').selectAll().where('profileId', '=', profile.id);
  return paginate(q, params, (q) => q.orderBy('number', 'desc'), (s) => stateView(s, profile.headStateId));
}

/** Locks the profile row: every state insert and head move on a profile goes through here. */
export async function lockProfile(tx: Tx, profileId: string): Promise<Profile> {
  const p = await tx.selectFrom('profiles').selectAll().where('id', '=', profileId).forUpdate().executeTakeFirst();
  if (!p || p.status !== 'active') throw new NotFoundError('profile', profileId);
  return p;
}

export async function nextStateNumber(tx: Tx, profileId: string): Promise<number> {
  const { max } = await tx.selectFrom('states').select(sql<number | null>`max(number)`.as('max')).where('profileId', '=', profileId).executeTakeFirstOrThrow();
  return Number(max ?? 0) + 1;
}

export async function moveHead(ctx: Ctx, tx: Tx, profile: Profile, to: { id: string; baseVersionId: string | null }): Promise<void> {
  const moved = await tx
    .updateTable('profiles')
    .set({ headStateId: to.id, baseVersionId: to.baseVersionId, headSeq: sql`head_seq + 1`, updatedAt: ctx.now() })
    .where('id', '=', profile.id)
    .where('headSeq', '=', profile.headSeq)
    .executeTakeFirst();
  if (moved.numUpdatedRows === 0n) throw new ConflictError('The profile head moved; reload the head state and retry.', 'head_moved');
}

export interface CommitStateInput {
  organizationId: string;
  profileId: string;
  /** The full file list of the new state; every blob must be recorded (saveBlobs/storeBlob) in `tx`. */
  files: TreeEntry[];
  source: StateSource;
  /** Compare-and-set: the profile's `headSeq` the caller read; omitted: commit onto whatever is head. */
  expectedHeadSeq?: number;
  /** The state's base version; omitted: the profile's current base. */
  baseVersionId?: string | null;
  stateId?: string;
  /** The upload it registers (`source: upload`). */
  uploadId?: string;
}

/**
 * Commits a new head state in `tx`: stores only the overlay (its difference from the base
 * version), then moves the head by compare-and-set. 409 `head_moved` when `expectedHeadSeq`
 * is no longer the head. Used by uploads, runs and syncs.
 */
export async function commitState(ctx: Ctx, tx: Tx, input: CommitStateInput): Promise<State> {
  const profile = await lockProfile(tx, input.profileId);
  if (input.expectedHeadSeq !== undefined && profile.headSeq !== input.expectedHeadSeq) {
    throw new ConflictError('The profile head moved since this state was started; reload the head state and retry.', 'head_moved');
  }
  const baseVersionId = input.baseVersionId === undefined ? profile.baseVersionId : input.baseVersionId;
  const overlay = diffOverlay(await versionFiles(tx, input.organizationId, baseVersionId), input.files);
  const overlayHash = await saveOverlay(tx, overlay);
  const state = await tx
    .insertInto('states')
    .values({
      organizationId: input.organizationId,
      id: input.stateId ?? newId('state'),
      profileId: profile.id,
      appId: profile.appId,
      number: await nextStateNumber(tx, profile.id),
      parentStateId: profile.headStateId,
      baseVersionId,
      overlayHash,
      treeHash: treeHashOf(input.files),
      ...totals(input.files),
      source: input.source,
      status: 'ready',
      error: null,
      sandboxId: null,
      uploadId: input.uploadId ?? null,
      createdAt: ctx.now(),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  await moveHead(ctx, tx, profile, state);
  return state;
}

async function assertStateIdFree(db: Db, organizationId: string, id: string): Promise<void> {
  const used = await db.selectFrom('states').select('id').where('organizationId', '=', organizationId).where('id', '=', id).executeTakeFirst();
  if (used) throw new ConflictError(`State id "${id}" is already used.`);
}

/** `state/upload`: remembers the head, so complete can only land on it. */
export async function uploadState(ctx: Ctx, organizationId: string, input: { profileId: string; stateId?: string; files: { name: string; hash: string }[] }) {
  const profile = await findProfile(ctx.db, organizationId, input.profileId);
  const files = checkDeclaredFiles(input.files);
  const stateId = input.stateId ?? newId('state');
  await assertStateIdFree(ctx.db, organizationId, stateId);
  const existing = await referencedByOrganization(ctx.db, organizationId, files.map((f) => f.hash));
  const reply = await openUpload(
    ctx,
    { organizationId, kind: 'state', appId: profile.appId, profileId: profile.id, targetId: stateId, expectedHeadStateId: profile.headStateId, expectedHeadSeq: profile.headSeq },
    files,
    existing,
  );
  return { uploadId: reply.uploadId, stateId, expiresAt: reply.expiresAt, uploadUrls: reply.uploadUrls, ...(reply.batchUrl ? { batchUrl: reply.batchUrl } : {}) };
}

export async function completeStateUpload(ctx: Ctx, organizationId: string, uploadId: string, input: { profileId: string; stateId: string }): Promise<StateView> {
  const profile = await findProfile(ctx.db, organizationId, input.profileId);
  // Registered long ago (its upload swept after 24 h): the state it registered, as a
  // repeated complete gives. Only that one: any other upload id stays a 404.
  const upload = await findUpload(ctx, organizationId, 'state', { id: uploadId }).catch(async (err: unknown) => {
    const s = await findState(ctx.db, organizationId, input.stateId, profile.id).catch(() => null);
    if (s?.uploadId !== uploadId) throw err;
    return null;
  });
  if (!upload) return getState(ctx, organizationId, input.stateId);
  if (upload.profileId !== profile.id) throw new NotFoundError('upload', uploadId);
  if (upload.targetId !== input.stateId) throw new NotFoundError('state', input.stateId);
  return registerState(ctx, upload);
}

export async function createState(ctx: Ctx, organizationId: string, input: { profileId: string; stateId: string }): Promise<StateView> {
  const profile = await findProfile(ctx.db, organizationId, input.profileId);
  const upload = await ctx.db
    .selectFrom('uploads')
    .selectAll()
    .where('organizationId', '=', organizationId)
    .where('kind', '=', 'state')
    .where('targetId', '=', input.stateId)
    .where('profileId', '=', profile.id)
    .executeTakeFirst();
  if (!upload) {
    // Registered long ago (its upload swept after 24 h): the same state, as a repeated
    // complete gives. A state no upload registered (a run's, a sync's) is not this call's.
    const s = await findState(ctx.db, organizationId, input.stateId, profile.id);
    if (!s.uploadId) throw new NotFoundError('upload for state', input.stateId);
    return getState(ctx, organizationId, s.id);
  }
  return registerState(ctx, upload);
}

async function registerState(ctx: Ctx, upload: Upload): Promise<StateView> {
  if (upload.status === 'registered') return getState(ctx, upload.organizationId, upload.registeredId!);
  assertOpen(ctx, upload);
  const app = await ctx.db.selectFrom('apps').selectAll().where('id', '=', upload.appId).executeTakeFirstOrThrow();
  const files = await checkForComplete(ctx, upload, app);
  if (!Array.isArray(files)) return getState(ctx, upload.organizationId, files.registeredId);
  const id = await ctx.db.transaction().execute(async (tx) => {
    const already = await claimUpload(ctx, tx, upload, files);
    if (already) return already;
    const state = await commitState(ctx, tx, {
      organizationId: upload.organizationId,
      profileId: upload.profileId!,
      files: files.map((f) => ({ path: f.path, hash: f.hash, size: f.size })),
      source: 'upload',
      expectedHeadSeq: upload.expectedHeadSeq ?? 0,
      stateId: upload.targetId,
      uploadId: upload.id,
    });
    await settleConflicts(tx, state.profileId, files);
    await markRegistered(ctx, tx, upload, files, state.id);
    return state.id;
  });
  await discardStaged(ctx, upload);
  return getState(ctx, upload.organizationId, id);
}

/**
 * The caller has now decided the profile's files: its open sync conflicts become resolved
 * (`manual`), with `resultHash` = the path's content in the new state (null if deleted).
 */
async function settleConflicts(tx: Tx, profileId: string, files: TreeEntry[]): Promise<void> {
  const open = await tx.selectFrom('conflicts').select(['id', 'path']).where('profileId', '=', profileId).where('status', '=', 'open').execute();
  const byPath = new Map(files.map((f) => [f.path, f.hash]));
  for (const c of open) {
    const hash = byPath.get(c.path);
    await tx
      .updateTable('conflicts')
      .set({ status: 'resolved', resolution: 'manual', resultHash: hash ? hashRef(hash) : null })
      .where('id', '=', c.id)
      .execute();
  }
}

/** Moves the profile head to one of its ready states (a pointer move) and records the rollback. */
export async function rollbackState(ctx: Ctx, organizationId: string, input: { profileId: string; toStateId: string; reason?: string }): Promise<StateView> {
  const profile = await findProfile(ctx.db, organizationId, input.profileId);
  const target = await findState(ctx.db, organizationId, input.toStateId, profile.id);
  if (target.status !== 'ready') throw new ConflictError(`State "${target.id}" is ${target.status}; only a ready state can become the head.`);
  await ctx.db.transaction().execute(async (tx) => {
    const locked = await lockProfile(tx, profile.id);
    await moveHead(ctx, tx, locked, target);
    await tx
      .insertInto('rollbacks')
      .values({
        id: newId('history'),
        organizationId,
        appId: profile.appId,
        profileId: profile.id,
        kind: 'state',
        fromId: locked.headStateId,
        toId: target.id,
        reason: input.reason ?? null,
        createdAt: ctx.now(),
      })
      .execute();
  });
  return getState(ctx, organizationId, target.id);
}
