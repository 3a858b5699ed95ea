import { sql } from 'kysely';
import type { Ctx } from './context.js';
import { CHUNK, EMPTY_HASH, chunks } from './trees.js';
import { discardUpload } from './uploads.js';
import type { Tx } from '../storage/db.js';

/**
 * Deleting an app's or a profile's files, and collecting what nothing references any more.
 * Each batch is one transaction that deletes rows and then sweeps only the candidates those
 * rows referenced (overlays or trees, then their blob rows), so a crash leaves either the
 * batch untouched or fully collected: a retried job finds the rest. A blob row is deleted only
 * when no tree, overlay or open upload references it; writers lock the blob rows they use (see
 * trees.ts saveBlobs), so a collection never removes content that a commit is registering.
 *
 * The bytes go only after that transaction has committed (removeStored): deleted under it, a
 * crash before the commit would bring the rows back without their bytes, and an upload of the
 * same content would then be told it is stored already. A crash between the commit and the
 * removal leaves bytes no row accounts for, which the daily store check collects.
 */

const BATCH = 500;
/** How old an unreferenced blob row or stored file must be before `collectStray` takes it. */
const STRAY_AGE_MS = 24 * 60 * 60 * 1000;

/** A blob row `b` that no tree entry, overlay entry or open upload references. */
const UNREFERENCED = sql<boolean>`
  not exists (select 1 from tree_entries te where te.blob_hash = b.hash)
  and not exists (select 1 from overlay_entries oe where oe.blob_hash = b.hash)
  and not exists (select 1 from uploads u where u.status = 'open' and u.files @> jsonb_build_array(jsonb_build_object('hash', b.hash)))`;

/** Deletes the blob rows among `candidates` that nothing references; returns their hashes (for removeStored, after the commit). */
async function sweepBlobs(tx: Tx, candidates: string[]): Promise<string[]> {
  const swept: string[] = [];
  for (const part of chunks([...new Set(candidates)])) {
    const gone = await tx.deleteFrom('blobs as b').where(sql<boolean>`b.hash = any(${part}::text[])`).where(UNREFERENCED).returning('b.hash').execute();
    for (const g of gone) swept.push(g.hash);
  }
  return swept;
}

/**
 * Removes stored content that no blob row accounts for. Each hash is claimed first (a row
 * inserted in this transaction), so a writer registering the same content meanwhile waits,
 * then finds it gone and stores it again (src/storage/README.md, "Consistency rules"); a hash
 * that has a row again is left alone. Returns how many were removed.
 */
async function removeStored(ctx: Ctx, hashes: string[]): Promise<number> {
  let removed = 0;
  for (const part of chunks([...new Set(hashes)])) {
    removed += await ctx.db.transaction().execute(async (tx) => {
      const claimed = await sql<{ hash: string }>`
        insert into blobs (hash, size) select h, 0 from unnest(${part}::text[]) as t(h)
        on conflict (hash) do nothing
        returning hash`.execute(tx);
      const stray = claimed.rows.map((r) => r.hash);
      if (stray.length === 0) return 0;
      await ctx.blobs.delete(stray);
      await tx.deleteFrom('blobs').where(sql<boolean>`hash = any(${stray}::text[])`).execute();
      return stray.length;
    });
  }
  return removed;
}

async function sweepOverlays(tx: Tx, candidates: string[]): Promise<string[]> {
  const swept: string[] = [];
  const hashes = [...new Set(candidates)].filter((h) => h !== EMPTY_HASH);
  for (const part of chunks(hashes)) {
    const unused = await tx
      .selectFrom('overlays as o')
      .select('o.hash')
      .where('o.hash', 'in', part)
      .where(({ not, exists, selectFrom }) => not(exists(selectFrom('states as s').select(sql`1`.as('x')).whereRef('s.overlayHash', '=', 'o.hash'))))
      .forUpdate()
      .execute();
    if (unused.length === 0) continue;
    const ids = unused.map((o) => o.hash);
    const entries = await tx.selectFrom('overlayEntries').select('blobHash').where('overlayHash', 'in', ids).where('blobHash', 'is not', null).execute();
    await tx.deleteFrom('overlays').where('hash', 'in', ids).execute();
    swept.push(...(await sweepBlobs(tx, entries.map((e) => e.blobHash!))));
  }
  return swept;
}

async function sweepTrees(tx: Tx, candidates: string[]): Promise<string[]> {
  const swept: string[] = [];
  for (const part of chunks([...new Set(candidates)])) {
    const unused = await tx
      .selectFrom('trees as t')
      .select('t.hash')
      .where('t.hash', 'in', part)
      .where(({ not, exists, selectFrom }) => not(exists(selectFrom('versions as v').select(sql`1`.as('x')).whereRef('v.treeHash', '=', 't.hash'))))
      .forUpdate()
      .execute();
    for (const { hash } of unused) {
      const entries = await tx.selectFrom('treeEntries').select('blobHash').where('treeHash', '=', hash).execute();
      await tx.deleteFrom('trees').where('hash', '=', hash).execute();
      swept.push(...(await sweepBlobs(tx, entries.map((e) => e.blobHash))));
    }
  }
  return swept;
}

/** Deletes one batch of states (by app or profile) and collects their overlays; false when none were left. */
async function deleteStateBatch(ctx: Ctx, by: { appId: string } | { profileId: string }): Promise<boolean> {
  const swept = await ctx.db.transaction().execute(async (tx) => {
    let q = tx.selectFrom('states').select(['organizationId', 'id', 'overlayHash']).limit(BATCH);
    q = 'appId' in by ? q.where('appId', '=', by.appId) : q.where('profileId', '=', by.profileId);
    const batch = await q.execute();
    if (batch.length === 0) return null;
    await tx
      .deleteFrom('states')
      .where('organizationId', '=', batch[0].organizationId)
      .where('id', 'in', batch.map((s) => s.id))
      .execute();
    return sweepOverlays(tx, batch.flatMap((s) => (s.overlayHash ? [s.overlayHash] : [])));
  });
  if (swept === null) return false;
  await removeStored(ctx, swept);
  return true;
}

async function deleteVersionBatch(ctx: Ctx, appId: string): Promise<boolean> {
  const swept = await ctx.db.transaction().execute(async (tx) => {
    const batch = await tx.selectFrom('versions').select(['organizationId', 'id', 'treeHash']).where('appId', '=', appId).limit(BATCH).execute();
    if (batch.length === 0) return null;
    await tx
      .deleteFrom('versions')
      .where('organizationId', '=', batch[0].organizationId)
      .where('id', 'in', batch.map((v) => v.id))
      .execute();
    return sweepTrees(tx, batch.map((v) => v.treeHash));
  });
  if (swept === null) return false;
  await removeStored(ctx, swept);
  return true;
}

async function deleteUploads(ctx: Ctx, by: { appId: string } | { profileId: string }): Promise<void> {
  let q = ctx.db.selectFrom('uploads').select(['id', 'files']);
  q = 'appId' in by ? q.where('appId', '=', by.appId) : q.where('profileId', '=', by.profileId);
  for (const u of await q.execute()) await discardUpload(ctx, u);
}

/** App deletion step: every version and state of the app, its uploads, and content only they used. */
export async function purgeAppFiles(ctx: Ctx, appId: string): Promise<void> {
  await deleteUploads(ctx, { appId });
  while (await deleteStateBatch(ctx, { appId }));
  while (await deleteVersionBatch(ctx, appId));
  await ctx.db.deleteFrom('rollbacks').where('appId', '=', appId).execute();
}

/** Profile deletion step: the profile's states and uploads, and content only they used. */
export async function purgeProfileFiles(ctx: Ctx, profileId: string): Promise<void> {
  await deleteUploads(ctx, { profileId });
  while (await deleteStateBatch(ctx, { profileId }));
  await ctx.db.deleteFrom('rollbacks').where('profileId', '=', profileId).execute();
}

/**
 * The store check, once a day (jobs/maintenance.ts). Two kinds of leftovers no deletion job
 * finds, because nothing points at them:
 * - blob rows that nothing references, e.g. those of a snapshot whose state was restored
 *   another way meanwhile;
 * - stored content with no row at all: files a commit promoted before it failed, or a PGlite
 *   commit a power cut took back (PGlite does not flush its files).
 * Only what is older than `minAge` counts: nothing legitimate stays unreferenced that long.
 * Stored content is claimed before it goes: a row is inserted for each stray hash, so a
 * writer registering the same content meanwhile waits for this transaction, then finds the
 * content gone and stores it again (src/storage/README.md, "Consistency rules").
 * `signal` stops it between batches (a worker shutting down); the next check goes on.
 */
export async function collectStray(ctx: Ctx, opts: { minAge?: number; signal?: AbortSignal } = {}): Promise<{ rows: number; files: number }> {
  const before = new Date(ctx.now().getTime() - (opts.minAge ?? STRAY_AGE_MS));
  const stopped = () => opts.signal?.aborted ?? false;
  let rows = 0;
  while (!stopped()) {
    const swept = await ctx.db.transaction().execute(async (tx) => {
      const stray = await tx.selectFrom('blobs as b').select('b.hash').where('b.createdAt', '<', before).where(UNREFERENCED).limit(CHUNK).execute();
      return sweepBlobs(tx, stray.map((b) => b.hash));
    });
    await removeStored(ctx, swept);
    rows += swept.length;
    if (swept.length === 0) break;
  }
  let files = 0;
  for await (const page of ctx.blobs.listStored()) {
    const old = page.filter((b) => b.modifiedAt < before).map((b) => b.hash);
    for (const part of chunks([...new Set(old)])) {
      if (stopped()) return { rows, files };
      files += await removeStored(ctx, part);
    }
  }
  return { rows, files };
}
