import { sql } from 'kysely';
import { eachLimit } from '../core/concurrency.js';
import type { Ctx } from '../core/context.js';
import { newId } from '../core/ids.js';
import { readBlob, readInline, readTree, saveBlobs, type OverlayEntry } from '../core/trees.js';
import type { Tx } from '../storage/db.js';
import type { Strategy } from './merge/index.js';
import { changedPaths, planProfileMerge, versionTree, type ProfileMergePlan, type VersionTree } from './profile-merge.js';

/** Profiles per range job, and per transaction within one. */
export const RANGE_SIZE = 5000;
const BATCH_SIZE = 1000;

/**
 * Runs of a sync job (start or range) before it gives up: the queue retries one that failed or
 * whose worker died, with a growing wait; past this, what is left fails, saying so, rather
 * than wait for hours (and hold the app's later syncs) or stay running for good.
 */
const SYNC_JOB_ATTEMPTS = 5;

/**
 * The sync-start job: snapshots the sync's scope into sync_items, marks it running and fans
 * out range jobs, all in one transaction (a crash leaves it queued, and the retry redoes it).
 */
export async function startSync(ctx: Ctx, syncId: string, attempt = 1): Promise<void> {
  await ctx.db.transaction().execute(async (tx) => {
    const sync = await tx.selectFrom('syncs').selectAll().where('id', '=', syncId).forUpdate().executeTakeFirst();
    if (!sync || sync.status !== 'queued') return;
    if (attempt > SYNC_JOB_ATTEMPTS) {
      // Nothing was merged (the start commits whole): the sync fails, the app's next one starts.
      await tx.updateTable('syncs').set({ status: 'failed', completedAt: ctx.now() }).where('id', '=', syncId).execute();
      await startNextSync(ctx, tx, sync.appId);
      return;
    }
    const ids = sync.profileIds;
    await sql`
      insert into sync_items (sync_id, profile_id)
      select ${syncId}, p.id from profiles p
       where p.app_id = ${sync.appId} and p.status = 'active'
         ${ids ? sql`and p.id = any(${ids}::text[])` : sql``}
      on conflict do nothing`.execute(tx);
    const { total } = await tx
      .selectFrom('syncItems')
      .select(sql<number>`count(*)::int`.as('total'))
      .where('syncId', '=', syncId)
      .executeTakeFirstOrThrow();
    await tx.updateTable('syncs').set({ status: 'running', startedAt: ctx.now(), total }).where('id', '=', syncId).execute();
    const bounds = await sql<{ profileId: string }>`
      select profile_id from (
        select profile_id, row_number() over (order by profile_id) as rn from sync_items where sync_id = ${syncId}
      ) r where rn % ${RANGE_SIZE} = 0 order by profile_id`.execute(tx);
    let after: string | null = null;
    for (const upto of [...bounds.rows.map((r) => r.profileId), null]) {
      await ctx.queue.send('sync-range', { syncId, after, upto }, { tx, singletonKey: `${syncId}:${after ?? ''}` });
      after = upto;
    }
  });
}

/** Caches what every profile of a sync shares: version trees, their deltas, blob bytes. */
class SyncCache {
  private trees = new Map<string, VersionTree>();
  private deltas = new Map<string, Set<string>>();
  private blobs = new Map<string, Buffer>();
  private blobBytes = 0;

  constructor(private readonly ctx: Ctx) {}

  async tree(tx: Tx, organizationId: string, versionId: string | null): Promise<VersionTree> {
    const key = versionId ?? '';
    let t = this.trees.get(key);
    if (!t) {
      const v = versionId
        ? await tx.selectFrom('versions').select('treeHash').where('organizationId', '=', organizationId).where('id', '=', versionId).executeTakeFirst()
        : undefined;
      t = versionTree(v ? await readTree(tx, v.treeHash) : []);
      this.trees.set(key, t);
    }
    return t;
  }

  delta(baseVersionId: string | null, base: VersionTree, incoming: VersionTree): Set<string> {
    const key = baseVersionId ?? '';
    let d = this.deltas.get(key);
    if (!d) this.deltas.set(key, (d = changedPaths(base, incoming)));
    return d;
  }

  /** Loads the inline contents of many blobs in one query (the merges of a batch). */
  async prefetch(tx: Tx, hashes: Iterable<string>): Promise<void> {
    const missing = [...new Set(hashes)].filter((h) => !this.blobs.has(h));
    if (missing.length === 0) return;
    for (const [hash, bytes] of await readInline(tx, missing)) this.keep(hash, bytes);
  }

  private keep(hash: string, buf: Buffer): void {
    // Base and incoming contents repeat across profiles; keep up to 64 MiB of them.
    if (this.blobBytes + buf.length > 64 * 1024 * 1024) return;
    this.blobs.set(hash, buf);
    this.blobBytes += buf.length;
  }

  async bytes(tx: Tx, hash: string): Promise<Buffer> {
    const hit = this.blobs.get(hash);
    if (hit) return hit;
    const buf = await readBlob({ db: tx, blobs: this.ctx.blobs }, hash);
    this.keep(hash, buf);
    return buf;
  }
}

type Outcome = {
  profileId: string;
  outcome: 'updated' | 'unchanged' | 'failed';
  error?: string;
  plan?: ProfileMergePlan;
  /** The overlay of the profile's head before the merge. */
  fromOverlayHash?: string;
  /** The profile's head state and highest state number, read under the batch's lock. */
  headStateId?: string | null;
  maxNumber?: number;
};

/**
 * The sync-range job: merges the pending profiles of one key range, a batch per transaction.
 * Items are claimed with SKIP LOCKED and marked in the transaction that commits their states,
 * so a duplicate or retried job never merges a profile twice and a crash loses no work.
 */
export async function processSyncRange(ctx: Ctx, job: { syncId: string; after: string | null; upto: string | null; attempt?: number }): Promise<void> {
  const sync = await ctx.db.selectFrom('syncs').selectAll().where('id', '=', job.syncId).executeTakeFirst();
  if (!sync || sync.status !== 'running') return;
  if ((job.attempt ?? 1) > SYNC_JOB_ATTEMPTS) {
    // The profiles this range still has pending fail; each one merged before keeps its outcome.
    let q = ctx.db
      .updateTable('syncItems')
      .set({ outcome: 'failed', error: `Not merged: the sync's worker failed or stopped on this profile's batch ${SYNC_JOB_ATTEMPTS} times; sync this profile again.` })
      .where('syncId', '=', sync.id)
      .where('outcome', 'is', null);
    if (job.after !== null) q = q.where('profileId', '>', job.after);
    if (job.upto !== null) q = q.where('profileId', '<=', job.upto);
    await q.execute();
    await finishIfDone(ctx, sync.id);
    return;
  }
  const cache = new SyncCache(ctx);
  const strategy = sync.strategy as Strategy;
  for (;;) {
    const more = await ctx.db.transaction().execute(async (tx) => {
      // Both for this transaction only. synchronous_commit: a commit lost in a server crash loses
      // the batch's sync_items outcomes with it, so the range job (retried from the queue) merges
      // those profiles again; nothing to wait for. enable_seqscan: every statement of a batch
      // reaches at most a batch of rows by key, but the planner, with statistics that lag what a
      // sync (or a bulk import of profiles) just wrote, would rather scan whole tables, per batch.
      await sql`select set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true)`.execute(tx);
      let q = tx
        .selectFrom('syncItems')
        .select(['profileId', sql<string>`ctid::text`.as('ctid')])
        .where('syncId', '=', sync.id)
        .where('outcome', 'is', null)
        .orderBy('profileId')
        .limit(BATCH_SIZE)
        .forUpdate()
        .skipLocked();
      if (job.after !== null) q = q.where('profileId', '>', job.after);
      if (job.upto !== null) q = q.where('profileId', '<=', job.upto);
      const items = await q.execute();
      if (items.length === 0) return false;
      const outcomes = await mergeBatch(ctx, tx, cache, sync, strategy, items.map((i) => i.profileId));
      await writeBatch(ctx, tx, sync, strategy, outcomes, new Map(items.map((i) => [i.profileId, i.ctid])));
      return true;
    });
    if (!more) break;
  }
  await finishIfDone(ctx, sync.id);
}

async function mergeBatch(
  ctx: Ctx,
  tx: Tx,
  cache: SyncCache,
  sync: { organizationId: string; versionId: string },
  strategy: Strategy,
  profileIds: string[],
): Promise<Outcome[]> {
  // Lock first, read after. Under READ COMMITTED a locking read that waited for a writer (a run
  // or upload moving a head) re-reads only the locked row, not what it joins: the new head
  // state would read as missing and its number as unused. A statement after the lock sees
  // all the writer committed. Locked in id order, as every batch is, so batches never deadlock.
  // Arrays rather than `in (…)` lists: one parameter each, however large the batch.
  await tx
    .selectFrom('profiles')
    .select('id')
    .where(sql<boolean>`id = any(${profileIds}::text[])`)
    .orderBy('id')
    .forUpdate()
    .execute();
  const rows = await tx
    .selectFrom('profiles as p')
    .leftJoin('states as s', (j) => j.onRef('s.organizationId', '=', 'p.organizationId').onRef('s.id', '=', 'p.headStateId'))
    .select(['p.id', 'p.status', 'p.headStateId', 'p.baseVersionId', 's.overlayHash'])
    .select(sql<number | null>`(select max(n.number) from states n where n.profile_id = p.id)`.as('maxNumber'))
    .where(sql<boolean>`p.id = any(${profileIds}::text[])`)
    .execute();
  const byId = new Map(rows.map((r) => [r.id, r]));
  const incoming = await cache.tree(tx, sync.organizationId, sync.versionId);
  const overlays = await readOverlays(tx, [...new Set(rows.map((r) => r.overlayHash).filter((h): h is string => !!h))]);
  // One query for every blob the batch's content merges will read.
  const wanted: string[] = [];
  for (const r of rows) {
    if (!r.overlayHash || r.baseVersionId === sync.versionId) continue;
    const base = await cache.tree(tx, sync.organizationId, r.baseVersionId);
    const delta = cache.delta(r.baseVersionId, base, incoming);
    for (const e of overlays.get(r.overlayHash) ?? []) {
      if (!delta.has(e.path)) continue;
      for (const h of [e.hash, base.byPath.get(e.path)?.hash, incoming.byPath.get(e.path)?.hash]) if (h) wanted.push(h);
    }
  }
  await cache.prefetch(tx, wanted);
  const out: Outcome[] = [];
  for (const profileId of profileIds) {
    const p = byId.get(profileId);
    if (!p || p.status !== 'active') {
      out.push({ profileId, outcome: 'failed', error: 'The profile was deleted during the sync.' });
      continue;
    }
    if (p.baseVersionId === sync.versionId) {
      out.push({ profileId, outcome: 'unchanged' });
      continue;
    }
    if (p.headStateId && !p.overlayHash) {
      out.push({ profileId, outcome: 'failed', error: 'The head state is still materializing; sync this profile again once it is ready.' });
      continue;
    }
    try {
      const base = await cache.tree(tx, sync.organizationId, p.baseVersionId);
      const delta = cache.delta(p.baseVersionId, base, incoming);
      // A profile with no state yet has the base version's files: the empty overlay.
      const overlay = p.overlayHash ? (overlays.get(p.overlayHash) ?? []) : [];
      const plan = await planProfileMerge(base, incoming, delta, overlay, strategy, (h) => cache.bytes(tx, h), p.overlayHash ?? undefined);
      out.push({ profileId, outcome: 'updated', plan, fromOverlayHash: p.overlayHash ?? undefined, headStateId: p.headStateId, maxNumber: Number(p.maxNumber ?? 0) });
    } catch (err) {
      out.push({ profileId, outcome: 'failed', error: `Merge failed: ${(err as Error).message}` });
    }
  }
  return out;
}

async function readOverlays(tx: Tx, hashes: string[]): Promise<Map<string, OverlayEntry[]>> {
  const out = new Map<string, OverlayEntry[]>();
  for (const h of hashes) out.set(h, []);
  if (hashes.length === 0) return out;
  const rows = await tx
    .selectFrom('overlayEntries')
    .select(['overlayHash', 'path', 'blobHash', 'size'])
    .where(sql<boolean>`overlay_hash = any(${hashes}::text[])`)
    // Path order within each overlay is all the merge needs.
    .orderBy(sql`path collate "C"`)
    .execute();
  for (const r of rows) out.get(r.overlayHash)!.push({ path: r.path, hash: r.blobHash, size: r.size === null ? null : Number(r.size) });
  return out;
}

/**
 * Writes one batch set-based: blobs, overlays, states, heads, conflicts, items, counters.
 * Per-row values travel as one array per column (`unnest`), so a statement's size and
 * planning cost do not grow with the batch.
 */
async function writeBatch(
  ctx: Ctx,
  tx: Tx,
  sync: { id: string; organizationId: string; appId: string; versionId: string },
  strategy: Strategy,
  outcomes: Outcome[],
  /** Where each profile's sync_items row is (its ctid), locked by this transaction since the claim. */
  itemRows: Map<string, string>,
): Promise<void> {
  const updated = outcomes.filter((o): o is Outcome & { plan: ProfileMergePlan } => o.outcome === 'updated');
  const now = ctx.now();
  let puts: Promise<void> = Promise.resolve();
  if (updated.length > 0) {
    const blobs = new Map(updated.flatMap((o) => o.plan.newBlobs).map((b) => [b.hash, b.bytes]));
    if (blobs.size > 0) {
      // Blob rows first (they lock), then the store; its writes overlap the statements below
      // and are awaited before the transaction commits.
      await saveBlobs(tx, ctx.blobs, [...blobs].map(([hash, bytes]) => ({ hash, size: bytes.length, bytes })));
      puts = eachLimit([...blobs], 8, ([hash, bytes]) => ctx.blobs.put(hash, bytes));
      puts.catch(() => {}); // awaited below, before the commit
    }
    // Only new overlays are written; one a profile keeps is already stored (and referenced).
    const overlays = new Map(
      updated.filter((o) => o.plan.overlay.length > 0 && o.plan.overlayHash !== o.fromOverlayHash).map((o) => [o.plan.overlayHash, o.plan.overlay]),
    );
    if (overlays.size > 0) {
      const inserted = await sql<{ hash: string; inserted: boolean }>`
        insert into overlays (hash, entry_count)
        select * from unnest(${[...overlays.keys()]}::text[], ${[...overlays.values()].map((e) => e.length)}::int[])
        on conflict (hash) do update set entry_count = excluded.entry_count
        returning hash, (xmax = 0) as inserted`.execute(tx);
      const entries = inserted.rows.filter((r) => r.inserted).flatMap((r) => overlays.get(r.hash)!.map((e) => ({ hash: r.hash, e })));
      if (entries.length > 0) {
        await sql`
          insert into overlay_entries (overlay_hash, path, blob_hash, size)
          select * from unnest(${entries.map((x) => x.hash)}::text[], ${entries.map((x) => x.e.path)}::text[],
                               ${entries.map((x) => x.e.hash)}::text[], ${entries.map((x) => x.e.size)}::bigint[])`.execute(tx);
      }
    }
    const stateIds = updated.map(() => newId('state'));
    await sql`
      insert into states (organization_id, id, profile_id, app_id, number, parent_state_id, base_version_id,
                          overlay_hash, tree_hash, file_count, size, source, status, created_at)
      select ${sync.organizationId}, u.id, u.profile_id, ${sync.appId}, u.number, u.parent_state_id, ${sync.versionId},
             u.overlay_hash, u.tree_hash, u.file_count, u.size, 'sync', 'ready', ${now}
        from unnest(${stateIds}::text[], ${updated.map((o) => o.profileId)}::text[], ${updated.map((o) => o.maxNumber! + 1)}::int[],
                    ${updated.map((o) => o.headStateId ?? null)}::text[], ${updated.map((o) => o.plan.overlayHash)}::text[],
                    ${updated.map((o) => o.plan.treeHash)}::text[], ${updated.map((o) => o.plan.fileCount)}::int[],
                    ${updated.map((o) => o.plan.size)}::bigint[])
          as u(id, profile_id, number, parent_state_id, overlay_hash, tree_hash, file_count, size)`.execute(tx);
    // Every profile of the batch is locked (FOR UPDATE above), so these head moves cannot race.
    await sql`
      update profiles p set head_state_id = u.state_id, base_version_id = ${sync.versionId},
             head_seq = p.head_seq + 1, updated_at = ${now}
        from unnest(${updated.map((o) => o.profileId)}::text[], ${stateIds}::text[]) as u(profile_id, state_id)
       where p.id = u.profile_id`.execute(tx);
    const conflicts = updated.flatMap((o) =>
      o.plan.conflicts.map((c) => ({ id: newId('conflict'), organizationId: sync.organizationId, appId: sync.appId, profileId: o.profileId, syncId: sync.id, strategy, createdAt: now, ...c })),
    );
    for (let i = 0; i < conflicts.length; i += 1000) await tx.insertInto('conflicts').values(conflicts.slice(i, i + 1000)).execute();
  }
  // By ctid: the claim's row locks keep it from changing, and it finds each row without an
  // index lookup.
  await sql`
    update sync_items i set outcome = u.outcome, conflicted = u.conflicted, error = u.error
      from unnest(${outcomes.map((o) => itemRows.get(o.profileId)!)}::tid[], ${outcomes.map((o) => o.outcome)}::text[],
                  ${outcomes.map((o) => (o.plan?.conflicts.length ?? 0) > 0)}::boolean[], ${outcomes.map((o) => o.error ?? null)}::text[])
        as u(item, outcome, conflicted, error)
     where i.ctid = u.item`.execute(tx);
  await puts;
  // Last: every range job updates this one row, so its lock is held only until the commit.
  const count = (pred: (o: Outcome) => boolean) => outcomes.filter(pred).length;
  await tx
    .updateTable('syncs')
    .set({
      processed: sql`processed + ${outcomes.length}`,
      updated: sql`updated + ${updated.length}`,
      unchanged: sql`unchanged + ${count((o) => o.outcome === 'unchanged')}`,
      failed: sql`failed + ${count((o) => o.outcome === 'failed')}`,
      conflicted: sql`conflicted + ${count((o) => (o.plan?.conflicts.length ?? 0) > 0)}`,
    })
    .where('id', '=', sync.id)
    .execute();
}

/** Completes the sync once no item is pending, then starts the app's next queued sync. */
export async function finishIfDone(ctx: Ctx, syncId: string): Promise<void> {
  await ctx.db.transaction().execute(async (tx) => {
    const sync = await tx.selectFrom('syncs').selectAll().where('id', '=', syncId).forUpdate().executeTakeFirst();
    if (!sync || sync.status !== 'running') return;
    const pending = await tx.selectFrom('syncItems').select('profileId').where('syncId', '=', syncId).where('outcome', 'is', null).limit(1).executeTakeFirst();
    if (pending) return;
    // The counters were kept per batch; recount from the items so the end state is exact.
    const c = await tx
      .selectFrom('syncItems')
      .select([
        sql<number>`count(*)::int`.as('processed'),
        sql<number>`(count(*) filter (where outcome = 'updated'))::int`.as('updated'),
        sql<number>`(count(*) filter (where outcome = 'unchanged'))::int`.as('unchanged'),
        sql<number>`(count(*) filter (where outcome = 'failed'))::int`.as('failed'),
        sql<number>`(count(*) filter (where conflicted))::int`.as('conflicted'),
      ])
      .where('syncId', '=', syncId)
      .executeTakeFirstOrThrow();
    await tx.updateTable('syncs').set({ ...c, status: 'completed', completedAt: ctx.now() }).where('id', '=', syncId).execute();
    await startNextSync(ctx, tx, sync.appId);
  });
}

/**
 * Syncs of one app run one after another, so two never interleave on a profile. The app row
 * lock orders this against createSync: a sync requested while the previous one finishes
 * either sees it completed and starts itself, or is committed before this looks for it.
 */
export async function startNextSync(ctx: Ctx, tx: Tx, appId: string): Promise<void> {
  await tx.selectFrom('apps').select('id').where('id', '=', appId).forUpdate().execute();
  const running = await tx.selectFrom('syncs').select('id').where('appId', '=', appId).where('status', '=', 'running').executeTakeFirst();
  if (running) return;
  const next = await tx
    .selectFrom('syncs')
    .select('id')
    .where('appId', '=', appId)
    .where('status', '=', 'queued')
    .orderBy('createdAt')
    .orderBy('id')
    .executeTakeFirst();
  if (next) await ctx.queue.send('sync-start', { syncId: next.id }, { tx, singletonKey: next.id });
}
