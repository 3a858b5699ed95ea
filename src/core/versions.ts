import { sql } from 'kysely';
import { appsChanged, findApp } from './apps.js';
import type { Ctx } from './context.js';
import { ConflictError, NotFoundError } from './errors.js';
import { newId } from './ids.js';
import { paginate, type PageParams } from './pagination.js';
import { initProfilesForVersion } from './profile-init.js';
import { hashRef, readTree, referencedByOrganization, saveTree, type TreeEntry } from './trees.js';
import { assertOpen, checkDeclaredFiles, checkForComplete, claimUpload, discardStaged, findUpload, markRegistered, openUpload } from './uploads.js';
import type { Db } from '../storage/db.js';
import type { Upload, Version } from '../storage/schema.js';

/** An app's versions: immutable commits on its main line; the app's `headVersionId` moves. */

export function versionView(v: Version, headVersionId: string | null, files?: TreeEntry[]) {
  return {
    id: v.id,
    appId: v.appId,
    number: v.number,
    parentVersionId: v.parentVersionId,
    fileCount: v.fileCount,
    size: Number(v.size),
    treeHash: v.treeHash,
    isHead: v.id === headVersionId,
    createdAt: v.createdAt.toISOString(),
    ...(files ? { files: files.map((f) => ({ name: f.path, hash: hashRef(f.hash), size: f.size })) } : {}),
  };
}

export type VersionView = ReturnType<typeof versionView>;

/** A version of this organization whose app is active; 404 otherwise. */
export async function findVersion(db: Db, organizationId: string, id: string, appId?: string): Promise<Version & { headVersionId: string | null }> {
  let q = db
    .selectFrom('versions as v')
    .innerJoin('apps as a', 'a.id', 'v.appId')
    .selectAll('v')
    .select('a.headVersionId')
    .where('v.organizationId', '=', organizationId)
    .where('v.id', '=', id)
    .where('a.status', '=', 'active');
  if (appId) q = q.where('v.appId', '=', appId);
  const v = await q.executeTakeFirst();
  if (!v) throw new NotFoundError('version', id);
  return v;
}

export async function getVersion(ctx: Ctx, organizationId: string, id: string): Promise<VersionView> {
  const v = await findVersion(ctx.db, organizationId, id);
  return versionView(v, v.headVersionId, await readTree(ctx.db, v.treeHash));
}

export async function listVersions(ctx: Ctx, organizationId: string, params: PageParams & { appId: string }) {
  const app = await findApp(ctx.db, organizationId, params.appId);
  const q = ctx.db.selectFrom('versions').selectAll().where('appId', '=', app.id);
  return paginate(q, params, (q) => q.orderBy('number', 'desc'), (v) => versionView(v, app.headVersionId));
}

async function assertVersionIdFree(db: Db, organizationId: string, id: string): Promise<void> {
  const used = await db.selectFrom('versions').select('id').where('organizationId', '=', organizationId).where('id', '=', id).executeTakeFirst();
  if (used) throw new ConflictError(`Version id "${id}" is already used.`);
}

export async function uploadVersion(ctx: Ctx, organizationId: string, input: { appId: string; versionId?: string; files: { name: string; hash: string }[] }) {
  const app = await findApp(ctx.db, organizationId, input.appId);
  const files = checkDeclaredFiles(input.files);
  const versionId = input.versionId ?? newId('version');
  await assertVersionIdFree(ctx.db, organizationId, versionId);
  const existing = await referencedByOrganization(ctx.db, organizationId, files.map((f) => f.hash));
  const reply = await openUpload(
    ctx,
    { organizationId, kind: 'version', appId: app.id, profileId: null, targetId: versionId, expectedHeadStateId: null, expectedHeadSeq: null },
    files,
    existing,
  );
  return { uploadId: reply.uploadId, versionId, expiresAt: reply.expiresAt, uploadUrls: reply.uploadUrls, ...(reply.batchUrl ? { batchUrl: reply.batchUrl } : {}) };
}

/** `upload/{id}/complete`: the upload named by id must be this app's and issue this versionId. */
export async function completeVersionUpload(ctx: Ctx, organizationId: string, uploadId: string, input: { appId: string; versionId: string }): Promise<VersionView> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  // Registered long ago (its upload swept after 24 h): the version it registered, as a
  // repeated complete gives. Only that one: any other upload id stays a 404.
  const upload = await findUpload(ctx, organizationId, 'version', { id: uploadId }).catch(async (err: unknown) => {
    const v = await findVersion(ctx.db, organizationId, input.versionId, app.id).catch(() => null);
    if (v?.uploadId !== uploadId) throw err;
    return null;
  });
  if (!upload) return getVersion(ctx, organizationId, input.versionId);
  if (upload.appId !== app.id) throw new NotFoundError('upload', uploadId);
  if (upload.targetId !== input.versionId) throw new NotFoundError('version', input.versionId);
  return registerVersion(ctx, upload);
}

/** `version/create {appId, versionId}`: registers the upload that issued versionId, as complete would. */
export async function createVersion(ctx: Ctx, organizationId: string, input: { appId: string; versionId: string }): Promise<VersionView> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  const upload = await ctx.db
    .selectFrom('uploads')
    .selectAll()
    .where('organizationId', '=', organizationId)
    .where('kind', '=', 'version')
    .where('targetId', '=', input.versionId)
    .where('appId', '=', app.id)
    .executeTakeFirst();
  if (!upload) {
    // Registered long ago (its upload swept): the same version, as a repeated complete.
    const v = await findVersion(ctx.db, organizationId, input.versionId, app.id);
    return getVersion(ctx, organizationId, v.id);
  }
  return registerVersion(ctx, upload);
}

/** Checks the upload's files and registers the version as the app head, in one transaction. */
async function registerVersion(ctx: Ctx, upload: Upload): Promise<VersionView> {
  if (upload.status === 'registered') return describeRegistered(ctx, upload);
  assertOpen(ctx, upload);
  const app = await findApp(ctx.db, upload.organizationId, upload.appId);
  const files = await checkForComplete(ctx, upload, app);
  if (!Array.isArray(files)) return getVersion(ctx, upload.organizationId, files.registeredId);
  const registered = await ctx.db.transaction().execute(async (tx) => {
    const already = await claimUpload(ctx, tx, upload, files);
    if (already) return already;
    const locked = await tx.selectFrom('apps').select(['headVersionId', 'status']).where('id', '=', app.id).forUpdate().executeTakeFirst();
    if (!locked || locked.status !== 'active') throw new NotFoundError('app', app.id);
    const { max } = await tx
      .selectFrom('versions')
      .select(sql<number | null>`max(number)`.as('max'))
      .where('appId', '=', app.id)
      .executeTakeFirstOrThrow();
    const tree = await saveTree(tx, files.map((f) => ({ path: f.path, hash: f.hash, size: f.size })));
    const now = ctx.now();
    await tx
      .insertInto('versions')
      .values({
        organizationId: upload.organizationId,
        id: upload.targetId,
        appId: app.id,
        number: Number(max ?? 0) + 1,
        parentVersionId: locked.headVersionId,
        treeHash: tree.hash,
        fileCount: tree.fileCount,
        size: tree.size,
        uploadId: upload.id,
        createdAt: now,
      })
      .execute();
    await tx.updateTable('apps').set({ headVersionId: upload.targetId, updatedAt: now }).where('id', '=', app.id).execute();
    await initProfilesForVersion(ctx, tx, { organizationId: upload.organizationId, appId: app.id, id: upload.targetId, ...tree, treeHash: tree.hash });
    await markRegistered(ctx, tx, upload, files, upload.targetId);
    return upload.targetId;
  });
  appsChanged(ctx, upload.organizationId); // the head moved
  await discardStaged(ctx, upload);
  return getVersion(ctx, upload.organizationId, registered);
}

async function describeRegistered(ctx: Ctx, upload: Upload): Promise<VersionView> {
  return getVersion(ctx, upload.organizationId, upload.registeredId!);
}

/** Moves the app head to one of its versions and records the rollback. */
export async function rollbackVersion(ctx: Ctx, organizationId: string, input: { appId: string; toVersionId: string; reason?: string }): Promise<VersionView> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  const target = await findVersion(ctx.db, organizationId, input.toVersionId, app.id);
  await ctx.db.transaction().execute(async (tx) => {
    const locked = await tx.selectFrom('apps').select('headVersionId').where('id', '=', app.id).forUpdate().executeTakeFirstOrThrow();
    const now = ctx.now();
    await tx.updateTable('apps').set({ headVersionId: target.id, updatedAt: now }).where('id', '=', app.id).execute();
    await tx
      .insertInto('rollbacks')
      .values({ id: newId('history'), organizationId, appId: app.id, profileId: null, kind: 'version', fromId: locked.headVersionId, toId: target.id, reason: input.reason ?? null, createdAt: now })
      .execute();
  });
  appsChanged(ctx, organizationId); // the head moved
  return getVersion(ctx, organizationId, target.id);
}
