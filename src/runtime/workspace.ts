import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Ctx } from '../core/context.js';
import { lockProfile, commitState } from '../core/states.js';
import { MAX_FILES, pathProblem, readInline, readStored, sortByPath, stateFiles, storeBlob, treeHashOf, type TreeEntry } from '../core/trees.js';
import { changedBetween, rebaseOnto, type WrittenFile } from '../core/rebase.js';
import type { Tx } from '../storage/db.js';

/**
 * A run's working directory: the profile's head state written out before the turn, read
 * back after it, and the difference committed as a new state (`source: run`).
 */

export interface Workspace {
  cwd: string;
  /** The files as materialized, by path. */
  start: Map<string, TreeEntry>;
  /** What each materialized file looked like on the disk: an untouched file needs no re-hashing. */
  stamps: Map<string, Stamp>;
  headStateId: string | null;
  headSeq: number;
}

/**
 * A file's inode, size and change time. Not its modification time, which `mv`, `cp -p` or
 * `tar x` carry over from another file: a file moved over one of the same size and time would
 * look untouched. The change time moves with any write, rename or `touch`, and no tool sets it.
 */
export type Stamp = { ino: number; size: number; ctimeMs: number };

export function stampOf(st: { ino: number; size: number; ctimeMs: number }): Stamp {
  return { ino: st.ino, size: st.size, ctimeMs: st.ctimeMs };
}

function sameStamp(a: Stamp, b: Stamp): boolean {
  return a.ino === b.ino && a.size === b.size && a.ctimeMs === b.ctimeMs;
}

/** A file after the turn; `bytes` when it may be new content. */
export type WorkFile = WrittenFile;

const WRITE_PARALLEL = 8;

/** Writes the profile's head state into `cwd` (which must not exist yet). */
export async function materialize(ctx: Ctx, profileId: string, cwd: string): Promise<Workspace> {
  const p = await ctx.db
    .selectFrom('profiles as p')
    .leftJoin('states as s', (j) => j.onRef('s.organizationId', '=', 'p.organizationId').onRef('s.id', '=', 'p.headStateId'))
    .select(['p.organizationId', 'p.headStateId', 'p.headSeq', 's.baseVersionId', 's.overlayHash'])
    .where('p.id', '=', profileId)
    .where('p.status', '=', 'active')
    .executeTakeFirst();
  if (!p) throw new Error('The profile was deleted before the turn started.');
  const files = p.headStateId ? await stateFiles(ctx.db, { organizationId: p.organizationId, baseVersionId: p.baseVersionId, overlayHash: p.overlayHash }) : [];
  await fs.mkdir(cwd, { recursive: true });
  // Small files come from the database in one query per thousand, the rest from the store.
  const inline = await readInline(ctx.db, files.map((f) => f.hash));
  const stamps = new Map<string, Stamp>();
  for (let i = 0; i < files.length; i += WRITE_PARALLEL) {
    await Promise.all(
      files.slice(i, i + WRITE_PARALLEL).map(async (f) => {
        const target = inside(cwd, f.path);
        await fs.mkdir(path.dirname(target), { recursive: true });
        await fs.writeFile(target, inline.get(f.hash) ?? (await readStored(ctx, f.hash)));
        const st = await fs.stat(target);
        stamps.set(f.path, stampOf(st));
      }),
    );
  }
  return { cwd, start: new Map(files.map((f) => [f.path, f])), stamps, headStateId: p.headStateId, headSeq: p.headSeq };
}

function inside(root: string, rel: string): string {
  const target = path.resolve(root, rel);
  if (!target.startsWith(root + path.sep)) throw new Error(`Path "${rel}" escapes the working directory.`);
  return target;
}

/**
 * The regular files in the working directory after the turn. Symbolic links and other
 * special files are not content and are left out (a link could point anywhere on the
 * worker), as are names a bundle could not hold.
 */
export async function scan(ws: Workspace, maxBytes: number): Promise<Map<string, WorkFile>> {
  const out = new Map<string, WorkFile>();
  let total = 0;
  const walk = async (dir: string, prefix: string): Promise<void> => {
    for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
      const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) await walk(full, rel);
      if (!entry.isFile() || pathProblem(rel)) continue;
      // Gone: removed meanwhile (a process the turn left running), or a name that is not UTF-8,
      // which readdir hands back with U+FFFD in it and no file has. Neither stops the others.
      const st = await fs.stat(full).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return null;
        throw err;
      });
      if (!st) continue;
      const before = ws.start.get(rel);
      const stamp = ws.stamps.get(rel);
      if (before && stamp && sameStamp(stamp, stampOf(st))) out.set(rel, before);
      else {
        const bytes = await fs.readFile(full);
        out.set(rel, { path: rel, hash: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, bytes });
      }
      total += st.size;
      if (out.size > MAX_FILES) throw new Error(`The working directory holds more than ${MAX_FILES} files; the turn's files were not saved.`);
      if (total > maxBytes) throw new Error(`The working directory holds more than ${maxBytes} bytes; the turn's files were not saved.`);
    }
  };
  await walk(ws.cwd, '');
  return out;
}

/**
 * Commits the turn's changes onto the profile head in `tx`; returns the new head state id,
 * or null when the turn changed nothing. When another writer moved the head since the turn
 * started, the turn's changes are merged onto the head now (rebaseOnto), so neither loses
 * files.
 */
export async function commitRun(ctx: Ctx, tx: Tx, ws: Workspace, after: Map<string, WorkFile>, profileId: string): Promise<string | null> {
  if (changedBetween(ws.start, after).length === 0) return null;
  const profile = await lockProfile(tx, profileId);
  let result: Map<string, WorkFile>;
  let headTree: string | null = null;
  if (profile.headSeq === ws.headSeq) result = new Map(after);
  else {
    const head = profile.headStateId
      ? await tx.selectFrom('states').select(['organizationId', 'baseVersionId', 'overlayHash', 'treeHash']).where('organizationId', '=', profile.organizationId).where('id', '=', profile.headStateId).executeTakeFirst()
      : undefined;
    const current = new Map<string, WorkFile>((head ? await stateFiles(tx, head) : []).map((f) => [f.path, f]));
    headTree = head?.treeHash ?? null;
    result = await rebaseOnto(ctx, tx, ws.start, after, current);
  }
  // New content (the turn's files, merge results) gets its blob rows and bytes stored.
  for (const f of result.values()) if (f.bytes) await storeBlob(ctx, tx, f.path, f.bytes);
  const files = sortByPath([...result.values()].map(({ path: p, hash, size }) => ({ path: p, hash, size })));
  if (headTree !== null && treeHashOf(files) === headTree) return profile.headStateId;
  const state = await commitState(ctx, tx, { organizationId: profile.organizationId, profileId, files, source: 'run', expectedHeadSeq: profile.headSeq });
  return state.id;
}

