import { createHash } from 'node:crypto';
import type { Ctx } from './context.js';
import { readBlob, type TreeEntry } from './trees.js';
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
  for (const p of changedBetween(start, mine)) {
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
  return result;
}

function contentEntry(p: string, bytes: Buffer): WrittenFile {
  return { path: p, hash: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, bytes };
}
