import { createHash } from 'node:crypto';
import { mergeFile, type ConflictKind, type Strategy } from './merge/index.js';
import { applyOverlay, folders, overlayHashOf, sortByPath, totals, treeHashOf, type OverlayEntry, type TreeEntry } from '../core/trees.js';

/**
 * One profile's merge of a new app version, as data: which overlay its new state has
 * (relative to the incoming version), which new blobs that needs, and which conflicts to
 * record. Pure apart from `bytes`, which fetches blob contents by hash.
 */
export interface ProfileMergePlan {
  overlay: OverlayEntry[];
  overlayHash: string;
  treeHash: string;
  fileCount: number;
  size: number;
  newBlobs: { hash: string; bytes: Buffer }[];
  conflicts: {
    path: string;
    kind: ConflictKind;
    status: 'open' | 'resolved';
    resolution: 'current' | 'incoming' | null;
    baseHash: string | null;
    currentHash: string | null;
    incomingHash: string | null;
    resultHash: string | null;
  }[];
}

export interface VersionTree {
  /** In path order. */
  entries: TreeEntry[];
  byPath: Map<string, TreeEntry>;
  hash: string;
  size: number;
  /** Each entry's line of the treeHash text (`path\0hash\n`), shared by every profile's hash. */
  lines: string[];
  /** Every folder that holds an entry (`a` and `a/b` for `a/b/c`). */
  dirs: Set<string>;
}

export function versionTree(entries: TreeEntry[]): VersionTree {
  const sorted = sortByPath(entries);
  return {
    entries: sorted,
    byPath: new Map(sorted.map((e) => [e.path, e])),
    hash: treeHashOf(sorted),
    size: totals(sorted).size,
    lines: sorted.map((e) => `${e.path}\0${e.hash}\n`),
    dirs: new Set(sorted.flatMap((e) => folders(e.path))),
  };
}

/** Whether the version holds a folder at `p`, or a file at a folder above it. */
function clashesWith(incoming: VersionTree, p: string): boolean {
  if (incoming.dirs.has(p)) return true;
  for (let i = p.indexOf('/'); i !== -1; i = p.indexOf('/', i + 1)) if (incoming.byPath.has(p.slice(0, i))) return true;
  return false;
}

/** Paths whose content differs between two version trees (changed, added or removed). */
export function changedPaths(base: VersionTree, incoming: VersionTree): Set<string> {
  const out = new Set<string>();
  for (const e of incoming.entries) if (base.byPath.get(e.path)?.hash !== e.hash) out.add(e.path);
  for (const e of base.entries) if (!incoming.byPath.has(e.path)) out.add(e.path);
  return out;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/**
 * UTF-8 byte order of two strings without encoding them: UTF-16 code units order the same
 * way except surrogates (U+10000 and up), which must sort after U+E000–U+FFFF.
 */
export function comparePaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

/**
 * treeHash, fileCount and size of incoming ⊕ overlay, for an overlay in path order: one
 * linear pass over both lists, building the treeHash text from the version's own lines.
 */
function carriedOver(incoming: VersionTree, overlay: OverlayEntry[]): Pick<ProfileMergePlan, 'treeHash' | 'fileCount' | 'size'> {
  if (overlay.length === 0) return { treeHash: incoming.hash, fileCount: incoming.entries.length, size: incoming.size };
  const { entries, lines } = incoming;
  let text = '';
  let fileCount = 0;
  let size = 0;
  let i = 0;
  const takeIncoming = () => {
    text += lines[i];
    size += entries[i++].size;
    fileCount++;
  };
  for (const o of overlay) {
    while (i < entries.length && comparePaths(entries[i].path, o.path) < 0) takeIncoming();
    if (i < entries.length && entries[i].path === o.path) i++;
    if (o.hash === null) continue;
    text += `${o.path}\0${o.hash}\n`;
    size += o.size ?? 0;
    fileCount++;
  }
  while (i < entries.length) takeIncoming();
  return { treeHash: createHash('sha256').update(text).digest('hex'), fileCount, size };
}

/**
 * Three-way merge of one profile: base = its base version, current = base ⊕ `overlay`,
 * incoming = the new version. Only paths in the overlay that the version also changed can
 * conflict; every other path takes whichever side changed.
 */
export async function planProfileMerge(
  base: VersionTree,
  incoming: VersionTree,
  delta: Set<string>,
  overlay: OverlayEntry[],
  strategy: Strategy,
  bytes: (hash: string) => Promise<Buffer>,
  overlayHash?: string,
): Promise<ProfileMergePlan> {
  // The common case: the version changed none of the profile's paths, so its overlay (and
  // every file it holds) carries over unchanged onto the incoming version.
  // Both lists come from the database in path order (`collate "C"`).
  const clashFree = (o: OverlayEntry[]) => !o.some((e) => e.hash !== null && clashesWith(incoming, e.path));
  if (overlayHash !== undefined && !overlay.some((e) => delta.has(e.path)) && clashFree(overlay)) {
    return { overlay, overlayHash, ...carriedOver(incoming, overlay), newBlobs: [], conflicts: [] };
  }
  let next: OverlayEntry[] = [];
  const newBlobs: ProfileMergePlan['newBlobs'] = [];
  const conflicts: ProfileMergePlan['conflicts'] = [];
  for (const entry of overlay) {
    const inc = incoming.byPath.get(entry.path) ?? null;
    let result: { hash: string; size: number } | null = entry.hash === null ? null : { hash: entry.hash, size: entry.size ?? 0 };
    if (delta.has(entry.path) && (inc?.hash ?? null) !== entry.hash) {
      // Both sides changed this path, differently.
      const b = base.byPath.get(entry.path) ?? null;
      const merged = mergeFile({
        path: entry.path,
        base: b ? await bytes(b.hash) : null,
        current: entry.hash ? await bytes(entry.hash) : null,
        incoming: inc ? await bytes(inc.hash) : null,
        strategy,
      });
      if (merged.result === null) result = null;
      else {
        const hash = sha(merged.result);
        result = { hash, size: merged.result.length };
        if (hash !== entry.hash && hash !== inc?.hash) newBlobs.push({ hash, bytes: Buffer.from(merged.result) });
      }
      if (merged.conflict) {
        conflicts.push({
          path: entry.path,
          kind: merged.conflict.kind,
          status: merged.conflict.status,
          resolution: merged.conflict.resolution,
          baseHash: b ? `sha256-${b.hash}` : null,
          currentHash: entry.hash ? `sha256-${entry.hash}` : null,
          incomingHash: inc ? `sha256-${inc.hash}` : null,
          resultHash: merged.conflict.status === 'open' || result === null ? null : `sha256-${result.hash}`,
        });
      }
    }
    // The new overlay is relative to the incoming version: keep the path only where it differs.
    if ((result?.hash ?? null) !== (inc?.hash ?? null)) {
      next.push({ path: entry.path, hash: result?.hash ?? null, size: result?.size ?? null });
    }
  }
  if (!clashFree(next)) next = settleClashes(base, incoming, next, strategy, conflicts);
  const files = applyOverlay(incoming.entries, next);
  return {
    overlay: sortByPath(next),
    overlayHash: overlayHashOf(next),
    treeHash: next.length === 0 ? incoming.hash : treeHashOf(files),
    ...totals(files),
    newBlobs,
    conflicts,
  };
}

/**
 * A profile's file where the incoming version has a folder (`notes` against `notes/a.md`),
 * or the other way round. No disk holds both, so one side goes, and each path it loses is
 * a conflict (kind by CONTRACT's rule; neither side's tree held both, so the base lacks
 * the lost path or the other side deleted it). The strategy picks the side as for any
 * conflict: `incoming` keeps the app's paths; every other strategy keeps the profile's
 * (`manual` leaves the conflict open). The rest of the merge stands.
 */
function settleClashes(base: VersionTree, incoming: VersionTree, overlay: OverlayEntry[], strategy: Strategy, conflicts: ProfileMergePlan['conflicts']): OverlayEntry[] {
  const byPath = new Map(overlay.map((e) => [e.path, e]));
  // Incoming files the overlay leaves in place, under or above each of the profile's files.
  const appFilesAgainst = (p: string): TreeEntry[] => {
    const above = folders(p).flatMap((d) => (incoming.byPath.has(d) && !byPath.has(d) ? [incoming.byPath.get(d)!] : []));
    const below = incoming.dirs.has(p) ? incoming.entries.filter((e) => e.path.startsWith(`${p}/`) && !byPath.has(e.path)) : [];
    return [...above, ...below];
  };
  const hashOf = (h: string | null | undefined) => (h ? `sha256-${h}` : null);
  const lost = (path: string, current: string | null, inc: string | null, resolution: 'current' | 'incoming') => {
    const b = base.byPath.get(path)?.hash ?? null;
    const open = strategy === 'manual';
    conflicts.push({
      path,
      kind: b === null ? 'add_add' : 'modify_delete',
      status: open ? 'open' : 'resolved',
      resolution: open ? null : resolution,
      baseHash: hashOf(b),
      currentHash: hashOf(current),
      incomingHash: hashOf(inc),
      resultHash: null,
    });
  };
  for (const entry of overlay) {
    if (entry.hash === null) continue;
    const against = appFilesAgainst(entry.path);
    if (against.length === 0) continue;
    if (strategy === 'incoming') {
      byPath.delete(entry.path); // the app has no file at this path: the profile's goes
      lost(entry.path, entry.hash, null, 'incoming');
    } else {
      for (const a of against) {
        if (byPath.has(a.path)) continue; // settled for another of the profile's files
        byPath.set(a.path, { path: a.path, hash: null, size: null });
        lost(a.path, null, a.hash, 'current');
      }
    }
  }
  return [...byPath.values()];
}
