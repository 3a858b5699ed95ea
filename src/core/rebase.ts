import { createHash } from 'node:crypto';
import type { Ctx } from './context.js';
import { folders, readBlob, type TreeEntry } from './trees.js';
import { mergeFile } from '../sync/merge/index.js';
import type { Tx } from '../storage/db.js';

/** A file of a writer's result; `bytes` when it may be new content (not stored yet). */
export type WrittenFile = TreeEntry & { bytes?: Buffer };

const hashOf = (e: TreeEntry | undefined) => e?.hash ?? null;

/** Paths whose content differs between two file maps (changed, added or removed). */
export function changedBetween(from: Map<string, TreeEntry>, to: Map<string, TreeEntry>): string[] {
  return [...new Set([...from.keys(), ...to.keys()])].filter((p) => hashOf(from.get(p)) !== hashOf(to.get(p)));
}

/**
 * A writer's changes replayed onto a head that moved since it started: each path the writer
 * changed (from `start` to `mine`) is merged three-way (`smart`: base = start, current = the
 * head now, incoming = the writer's), every other path keeps the head's file. So neither the
 * writer nor whoever moved the head loses files. Merge results carry their `bytes`.
 */
export async function rebaseOnto(ctx: Pick<Ctx, 'blobs'>, tx: Tx, start: Map<string, TreeEntry>, mine: Map<string, WrittenFile>, current: Map<string, WrittenFile>): Promise<Map<string, WrittenFile>> {
  const result = new Map(current);
  const bytes = async (f: WrittenFile | undefined) => (f ? (f.bytes ?? (await readBlob({ db: tx, blobs: ctx.blobs }, f.hash))) : null);
  const changed = changedBetween(start, mine);
  for (const p of changed) {
    const base = start.get(p);
    const cur = current.get(p);
    const own = mine.get(p);
    let take: WrittenFile | undefined = own;
    if (hashOf(cur) !== hashOf(base) && hashOf(cur) !== hashOf(own)) {
      const merged = mergeFile({ path: p, base: await bytes(base), current: await bytes(cur), incoming: await bytes(own), strategy: 'smart' });
      take = merged.result === null ? undefined : contentEntry(p, Buffer.from(merged.result));
    }
    if (take) result.set(p, take);
    else result.delete(p);
  }
  settleClashes(result, current);
  return result;
}

/**
 * A path of the writer's where the head has a folder (`out` against `out/report.md`), or under
 * a file of the head's (`notes/a.md` against `notes`): no disk holds both, and a profile whose
 * state did could never run another turn. The head's paths never clash with one another, nor
 * the writer's, so every clash is between a path the head holds and one only the writer
 * brought; as a sync's `smart` merge settles such a clash (profile-merge.ts), the head's side
 * stays and the writer's path goes. The rest of its changes stand.
 */
function settleClashes(result: Map<string, WrittenFile>, current: Map<string, WrittenFile>): void {
  const above = new Set<string>();
  for (const p of result.keys()) for (const d of folders(p)) above.add(d);
  for (const p of [...result.keys()]) {
    if (current.has(p)) continue;
    if (above.has(p) || folders(p).some((d) => result.has(d))) result.delete(p);
  }
}

function contentEntry(p: string, bytes: Buffer): WrittenFile {
  return { path: p, hash: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, bytes };
}
