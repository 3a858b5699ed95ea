import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { sql } from 'kysely';
import type { Ctx } from './context.js';
import { INLINE_LIMIT, type BlobStore } from '../storage/blobs/driver.js';
import type { Db, Tx } from '../storage/db.js';
import { isBinary } from '../sync/merge/file.js';

/**
 * Trees, overlays and blobs: the content-addressed layer under versions and states
 * (src/storage/README.md). Hashes are 64 lowercase hex here; the API shows `sha256-<hex>`.
 */

/** One file of a tree: path, content hash (hex) and size in bytes. */
export interface TreeEntry {
  path: string;
  hash: string;
  size: number;
}

/** One path where a state differs from its base version; `hash: null` deletes it. */
export interface OverlayEntry {
  path: string;
  hash: string | null;
  size: number | null;
}

export const MAX_FILES = 10_000;
export const MAX_PATH_BYTES = 1024;
export const EMPTY_HASH = createHash('sha256').update('').digest('hex');

/** `sha256-<hex>`, `sha256-<base64>` (SRI) or bare hex → 64 lowercase hex; null if none of those. */
export function parseHash(input: string): string | null {
  if (/^[0-9a-fA-F]{64}$/.test(input)) return input.toLowerCase();
  if (!input.startsWith('sha256-')) return null;
  const rest = input.slice(7);
  if (/^[0-9a-fA-F]{64}$/.test(rest)) return rest.toLowerCase();
  if (!/^[A-Za-z0-9+/_-]{43}=?$/.test(rest)) return null;
  const bytes = Buffer.from(rest.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  return bytes.length === 32 ? bytes.toString('hex') : null;
}

export function hashRef(hex: string): string {
  return `sha256-${hex}`;
}

/** Why a file name is not a valid bundle path, or null when it is. */
export function pathProblem(name: string): string | null {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name, 'utf8') > MAX_PATH_BYTES) return `is longer than ${MAX_PATH_BYTES} bytes`;
  if (name.includes('\0')) return 'contains a NUL character';
  if (name.includes('\\')) return 'contains a backslash (use "/")';
  if (name.startsWith('/')) return 'is absolute (starts with "/")';
  for (const segment of name.split('/')) {
    if (segment === '') return 'has an empty segment ("//" or a trailing "/")';
    if (segment === '..' || segment === '.') return `has a "${segment}" segment`;
  }
  return null;
}

/** The folders above a path: `a`, `a/b` for `a/b/c`. */
export function folders(p: string): string[] {
  const out: string[] = [];
  for (let i = p.indexOf('/'); i !== -1; i = p.indexOf('/', i + 1)) out.push(p.slice(0, i));
  return out;
}

/**
 * The names of one bundle, taken one by one: none twice, and none both a file and a folder
 * (`a` and `a/b`), which no disk could hold as files. `add` returns what is wrong with a name
 * given the ones before it, or null (and records it).
 */
export class BundleNames {
  private readonly files = new Set<string>();
  /** Each folder the files so far are in, with one of those files. */
  private readonly folders = new Map<string, string>();

  add(name: string): string | null {
    if (this.files.has(name)) return 'appears twice';
    const inside = this.folders.get(name);
    if (inside !== undefined) return `is both a file and a folder (${JSON.stringify(inside)} is inside it)`;
    const above = folders(name);
    const file = above.find((f) => this.files.has(f));
    if (file !== undefined) return `is inside ${JSON.stringify(file)}, which is also a file`;
    this.files.add(name);
    for (const f of above) if (!this.folders.has(f)) this.folders.set(f, name);
    return null;
  }
}

/** Byte order of the UTF-8 paths: the canonical order (PostgreSQL: `collate "C"`). */
export function sortByPath<T extends { path: string }>(items: T[]): T[] {
  const keyed = items.map((item) => ({ item, key: Buffer.from(item.path, 'utf8') }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  return keyed.map((k) => k.item);
}

/** The contract's treeHash: sha256 hex of `path\0<hex>\n` per file, sorted by path. */
export function treeHashOf(entries: TreeEntry[]): string {
  const h = createHash('sha256');
  for (const e of sortByPath(entries)) h.update(`${e.path}\0${e.hash}\n`);
  return h.digest('hex');
}

export function overlayHashOf(entries: OverlayEntry[]): string {
  const h = createHash('sha256');
  for (const e of sortByPath(entries)) h.update(`${e.path}\0${e.hash ?? '-'}\n`);
  return h.digest('hex');
}

/** The paths where `files` differ from `base`: changed or added files, and deletions. */
export function diffOverlay(base: TreeEntry[], files: TreeEntry[]): OverlayEntry[] {
  const before = new Map(base.map((e) => [e.path, e]));
  const out: OverlayEntry[] = [];
  const seen = new Set<string>();
  for (const f of files) {
    seen.add(f.path);
    if (before.get(f.path)?.hash !== f.hash) out.push({ path: f.path, hash: f.hash, size: f.size });
  }
  for (const b of base) if (!seen.has(b.path)) out.push({ path: b.path, hash: null, size: null });
  return sortByPath(out);
}

/** Base files ⊕ overlay: what a state holds. */
export function applyOverlay(base: TreeEntry[], overlay: OverlayEntry[]): TreeEntry[] {
  const files = new Map(base.map((e) => [e.path, e]));
  for (const o of overlay) {
    if (o.hash === null) files.delete(o.path);
    else files.set(o.path, { path: o.path, hash: o.hash, size: o.size ?? 0 });
  }
  return sortByPath([...files.values()]);
}

export function totals(entries: TreeEntry[]): { fileCount: number; size: number } {
  return { fileCount: entries.length, size: entries.reduce((n, e) => n + e.size, 0) };
}

/*
 * Many rows go in and out as one array parameter per column (`unnest`, `= any`), not as a
 * parameter per value: PostgreSQL and PGlite parse and plan one small statement instead of
 * one with thousands of placeholders, which took twice as long for a thousand tree entries
 * (docs/PERFORMANCE.md, "Upload").
 */
export const CHUNK = 2000;
/** `items` in slices of at most CHUNK, one statement each. */
export function chunks<T>(items: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}

/**
 * Stores a tree once. The upsert locks the tree row, so a concurrent garbage collection
 * cannot remove it before this transaction's version points at it.
 */
export async function saveTree(tx: Tx, entries: TreeEntry[]): Promise<{ hash: string; fileCount: number; size: number }> {
  const hash = treeHashOf(entries);
  const { fileCount, size } = totals(entries);
  const row = await tx
    .insertInto('trees')
    .values({ hash, fileCount, size })
    .onConflict((oc) => oc.column('hash').doUpdateSet({ fileCount }))
    .returning(sql<boolean>`(xmax = 0)`.as('inserted'))
    .executeTakeFirstOrThrow();
  if (row.inserted) {
    for (const part of chunks(entries)) {
      await tx
        .insertInto('treeEntries')
        .columns(['treeHash', 'path', 'blobHash', 'size'])
        .expression(sql`select ${hash}, p, b, s from unnest(${part.map((e) => e.path)}::text[], ${part.map((e) => e.hash)}::text[], ${part.map((e) => e.size)}::bigint[]) as t(p, b, s)`)
        .execute();
    }
  }
  return { hash, fileCount, size };
}

/** Stores an overlay once (locked like `saveTree`). */
export async function saveOverlay(tx: Tx, entries: OverlayEntry[]): Promise<string> {
  // The empty overlay is created by the migration and never collected: no lock needed.
  if (entries.length === 0) return EMPTY_HASH;
  const hash = overlayHashOf(entries);
  const row = await tx
    .insertInto('overlays')
    .values({ hash, entryCount: entries.length })
    .onConflict((oc) => oc.column('hash').doUpdateSet({ entryCount: entries.length }))
    .returning(sql<boolean>`(xmax = 0)`.as('inserted'))
    .executeTakeFirstOrThrow();
  if (row.inserted) {
    for (const part of chunks(entries)) {
      await tx
        .insertInto('overlayEntries')
        .columns(['overlayHash', 'path', 'blobHash', 'size'])
        .expression(sql`select ${hash}, p, b, s from unnest(${part.map((e) => e.path)}::text[], ${part.map((e) => e.hash)}::text[], ${part.map((e) => e.size)}::bigint[]) as t(p, b, s)`)
        .execute();
    }
  }
  return hash;
}

export async function readTree(db: Db, treeHash: string): Promise<TreeEntry[]> {
  const rows = await db
    .selectFrom('treeEntries')
    .select(['path', 'blobHash', 'size'])
    .where('treeHash', '=', treeHash)
    .orderBy(sql`path collate "C"`)
    .execute();
  return rows.map((r) => ({ path: r.path, hash: r.blobHash, size: Number(r.size) }));
}

export async function readOverlay(db: Db, overlayHash: string): Promise<OverlayEntry[]> {
  const rows = await db
    .selectFrom('overlayEntries')
    .select(['path', 'blobHash', 'size'])
    .where('overlayHash', '=', overlayHash)
    .orderBy(sql`path collate "C"`)
    .execute();
  return rows.map((r) => ({ path: r.path, hash: r.blobHash, size: r.size === null ? null : Number(r.size) }));
}

/** The tree of a version (by organization and id); null when there is no such version. */
export async function versionFiles(db: Db, organizationId: string, versionId: string | null): Promise<TreeEntry[]> {
  if (!versionId) return [];
  const v = await db.selectFrom('versions').select('treeHash').where('organizationId', '=', organizationId).where('id', '=', versionId).executeTakeFirst();
  return v ? readTree(db, v.treeHash) : [];
}

/** A state's files: its base version's tree ⊕ its overlay, sorted by path. */
export async function stateFiles(
  db: Db,
  state: { organizationId: string; baseVersionId: string | null; overlayHash: string | null },
): Promise<TreeEntry[]> {
  const [base, overlay] = await Promise.all([
    versionFiles(db, state.organizationId, state.baseVersionId),
    state.overlayHash ? readOverlay(db, state.overlayHash) : Promise.resolve([]),
  ]);
  return applyOverlay(base, overlay);
}

/**
 * Which contents the database keeps as well as the blob store (`blobs.data`), up to
 * INLINE_LIMIT bytes. Small text always: content merges read it, a batch of profiles per
 * query. Small binary files only when the store is remote (S3), where every turn that
 * materializes a workspace would otherwise pay a round trip per file; binary files are never
 * content-merged, and from the local store a file reads as fast as a row.
 */
export function keptInline(store: Pick<BlobStore, 'kind'>, bytes: Buffer | undefined): bytes is Buffer {
  if (bytes === undefined || bytes.length > INLINE_LIMIT) return false;
  return store.kind !== 'local' || !isBinary(bytes);
}

/**
 * Records blob rows (small contents inline, see keptInline) and locks them for this
 * transaction, so garbage collection cannot delete them before the tree or overlay that uses
 * them commits.
 */
export async function saveBlobs(tx: Tx, store: Pick<BlobStore, 'kind'>, blobs: { hash: string; size: number; bytes?: Buffer }[]): Promise<void> {
  const unique = [...new Map(blobs.map((b) => [b.hash, b])).values()];
  for (const part of chunks(unique)) {
    const data = part.map((b) => (keptInline(store, b.bytes) ? b.bytes! : null));
    await tx
      .insertInto('blobs')
      .columns(['hash', 'size', 'data'])
      .expression(sql`select h, s, d from unnest(${part.map((b) => b.hash)}::text[], ${part.map((b) => b.size)}::bigint[], ${data}::bytea[]) as t(h, s, d)`)
      .onConflict((oc) => oc.column('hash').doUpdateSet({ size: sql`excluded.size` }))
      .execute();
  }
}

/** Locks existing blob rows; returns the hashes that exist. */
export async function lockBlobs(tx: Tx, hashes: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (const part of chunks([...new Set(hashes)])) {
    const rows = await tx.selectFrom('blobs').select('hash').where(sql<boolean>`hash = any(${part}::text[])`).forShare().execute();
    for (const r of rows) found.add(r.hash);
  }
  return found;
}

/** Writes server-made content (a run's or a merge's file) and returns its entry. Call in a transaction. */
export async function storeBlob(ctx: Pick<Ctx, 'blobs'>, tx: Tx, path: string, bytes: Buffer): Promise<TreeEntry> {
  const hash = createHash('sha256').update(bytes).digest('hex');
  await saveBlobs(tx, ctx.blobs, [{ hash, size: bytes.length, bytes }]);
  await ctx.blobs.put(hash, bytes);
  return { path, hash, size: bytes.length };
}

/** A blob's bytes: from the database when small, else from the blob store. */
export async function readBlob(ctx: Pick<Ctx, 'db' | 'blobs'>, hash: string): Promise<Buffer> {
  const row = await ctx.db.selectFrom('blobs').select('data').where('hash', '=', hash).executeTakeFirst();
  if (row?.data) return Buffer.from(row.data);
  return readStored(ctx, hash);
}

/** The inline contents among `hashes` (see keptInline), one query per CHUNK of them. */
export async function readInline(db: Db, hashes: Iterable<string>): Promise<Map<string, Buffer>> {
  const found = new Map<string, Buffer>();
  for (const part of chunks([...new Set(hashes)])) {
    const rows = await db.selectFrom('blobs').select(['hash', 'data']).where(sql<boolean>`hash = any(${part}::text[])`).where('data', 'is not', null).execute();
    for (const r of rows) found.set(r.hash, Buffer.from(r.data!));
  }
  return found;
}

/** A blob's bytes from the blob store (for contents that are not inline). */
export async function readStored(ctx: Pick<Ctx, 'blobs'>, hash: string): Promise<Buffer> {
  return ctx.blobs.read(hash);
}

/** A blob as a stream (downloads). */
export async function openBlob(ctx: Pick<Ctx, 'blobs'>, hash: string): Promise<Readable> {
  return ctx.blobs.get(hash);
}

/** Which of `hashes` the organization's versions or states already reference. */
export async function referencedByOrganization(db: Db, organizationId: string, hashes: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (const part of chunks([...new Set(hashes)])) {
    const rows = await db
      .selectFrom('treeEntries as te')
      .innerJoin('versions as v', 'v.treeHash', 'te.treeHash')
      .select('te.blobHash as hash')
      .where('v.organizationId', '=', organizationId)
      .where(sql<boolean>`te.blob_hash = any(${part}::text[])`)
      .union(
        db
          .selectFrom('overlayEntries as oe')
          .innerJoin('states as s', 's.overlayHash', 'oe.overlayHash')
          .select('oe.blobHash as hash')
          .where('s.organizationId', '=', organizationId)
          .where(sql<boolean>`oe.blob_hash = any(${part}::text[])`)
          .$narrowType<{ hash: string }>(),
      )
      .execute();
    for (const r of rows) found.add(r.hash);
  }
  return found;
}
