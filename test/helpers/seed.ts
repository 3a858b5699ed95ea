import { createHash } from 'node:crypto';
import type { Insertable } from 'kysely';
import type { Ctx } from '../../src/core/context.js';
import type { ProfilesTable, StatesTable } from '../../src/storage/schema.js';
import { applyOverlay, overlayHashOf, readTree, totals, treeHashOf, type OverlayEntry } from '../../src/core/trees.js';

const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

/**
 * Seeds `count` profiles on `baseVersionId` straight into the database (the API would take
 * minutes for 100,000): each with its own memory file, and every `editEvery`-th one also
 * editing `editPath` (a file the next version changes). Small contents are inline in the
 * blobs table, which is where the sync reads them from.
 */
export async function seedProfiles(
  ctx: Ctx,
  app: { id: string; organizationId: string; defaultAccessGroupId: string },
  baseVersionId: string,
  opts: { count: number; editEvery: number; editPath: string; editContent: (i: number) => string; prefix?: string },
): Promise<string[]> {
  const v = await ctx.db.selectFrom('versions').selectAll().where('organizationId', '=', app.organizationId).where('id', '=', baseVersionId).executeTakeFirstOrThrow();
  const base = await readTree(ctx.db, v.treeHash);
  const prefix = opts.prefix ?? 'seed';
  const ids: string[] = [];
  const CHUNK = 1000;
  for (let start = 0; start < opts.count; start += CHUNK) {
    const blobs: { hash: string; size: number; data: Buffer }[] = [];
    const overlays = new Map<string, OverlayEntry[]>();
    const profiles: Insertable<ProfilesTable>[] = [];
    const states: Insertable<StatesTable>[] = [];
    for (let i = start; i < Math.min(opts.count, start + CHUNK); i++) {
      const id = `prof-${prefix}${String(i).padStart(8, '0')}`;
      ids.push(id);
      const memory = Buffer.from(`# Memory of user ${i}\n- likes tea\n`);
      blobs.push({ hash: sha(memory), size: memory.length, data: memory });
      const entries: OverlayEntry[] = [{ path: 'memory/MEMORY.md', hash: sha(memory), size: memory.length }];
      if (i % opts.editEvery === 0) {
        const edit = Buffer.from(opts.editContent(i));
        blobs.push({ hash: sha(edit), size: edit.length, data: edit });
        entries.push({ path: opts.editPath, hash: sha(edit), size: edit.length });
      }
      const overlayHash = overlayHashOf(entries);
      overlays.set(overlayHash, entries);
      const files = applyOverlay(base, entries);
      const stateId = `state-${prefix}${String(i).padStart(8, '0')}`;
      profiles.push({ id, organizationId: app.organizationId, appId: app.id, identifier: `${prefix}-${i}`, accessGroupId: app.defaultAccessGroupId, headStateId: stateId, baseVersionId, headSeq: 1 });
      states.push({
        organizationId: app.organizationId,
        id: stateId,
        profileId: id,
        appId: app.id,
        number: 1,
        parentStateId: null,
        baseVersionId,
        overlayHash,
        treeHash: treeHashOf(files),
        ...totals(files),
        source: 'init',
        status: 'ready',
        error: null,
        sandboxId: null,
      });
    }
    await ctx.db.transaction().execute(async (tx) => {
      const unique = [...new Map(blobs.map((b) => [b.hash, b])).values()];
      await tx.insertInto('blobs').values(unique).onConflict((oc) => oc.column('hash').doNothing()).execute();
      await tx.insertInto('overlays').values([...overlays].map(([hash, e]) => ({ hash, entryCount: e.length }))).onConflict((oc) => oc.column('hash').doNothing()).execute();
      const entries = [...overlays].flatMap(([hash, e]) => e.map((x) => ({ overlayHash: hash, path: x.path, blobHash: x.hash, size: x.size })));
      await tx.insertInto('overlayEntries').values(entries).onConflict((oc) => oc.columns(['overlayHash', 'path']).doNothing()).execute();
      await tx.insertInto('profiles').values(profiles).execute();
      await tx.insertInto('states').values(states).execute();
    });
  }
  return ids;
}
