// Per-file three-way merge: decides, for one path, the profile's new file and the
// conflict record, from base (profile's base app version), current (profile) and
// incoming (new app version). Pure: no I/O, inputs are never mutated.
import { mergeJson } from './json.js';
import { countLines, mergeText, toBuffer } from './text.js';

export type Strategy = 'smart' | 'current' | 'incoming' | 'manual';
export type ConflictKind = 'content' | 'modify_delete' | 'add_add' | 'binary';

export interface FileMergeInput {
  path: string;
  base: Uint8Array | null;
  current: Uint8Array | null;
  incoming: Uint8Array | null;
  strategy: Strategy;
}

export interface FileMergeResult {
  result: Uint8Array | null; // the file in the profile's new state (null = absent)
  conflict: null | {
    kind: ConflictKind;
    status: 'open' | 'resolved';
    resolution: 'current' | 'incoming' | null;
    pointers?: string[] /* JSON */;
  };
}

export interface MergeOptions {
  /** Files larger than this (any side) are not content-merged. Default 1 MiB. */
  maxMergeBytes?: number;
  /** Files with more lines than this (any side) are not content-merged. Default 20,000. */
  maxMergeLines?: number;
}

export const DEFAULT_MAX_MERGE_BYTES = 1024 * 1024;
export const DEFAULT_MAX_MERGE_LINES = 20_000;
/** Like git: a NUL in the first 8 KiB marks a file as binary. */
export const BINARY_SNIFF_BYTES = 8192;

/**
 * What each strategy does with a conflict it does not content-merge. `smart` uses
 * its row only after a content merge is impossible or still conflicted.
 */
export const STRATEGY_TABLE: Record<Strategy, { take: 'current' | 'incoming'; status: 'open' | 'resolved'; resolution: 'current' | 'incoming' | null }> = {
  current: { take: 'current', status: 'resolved', resolution: 'current' },
  incoming: { take: 'incoming', status: 'resolved', resolution: 'incoming' },
  smart: { take: 'current', status: 'resolved', resolution: 'current' },
  manual: { take: 'current', status: 'open', resolution: null },
};

export function isBinary(bytes: Uint8Array): boolean {
  return toBuffer(bytes).subarray(0, BINARY_SNIFF_BYTES).indexOf(0) !== -1; // memchr
}

export function conflictKind(base: Uint8Array | null, current: Uint8Array | null, incoming: Uint8Array | null): ConflictKind {
  if (base === null) return 'add_add';
  if (current === null || incoming === null) return 'modify_delete';
  if (isBinary(base) || isBinary(current) || isBinary(incoming)) return 'binary';
  return 'content';
}

function sameBytes(a: Uint8Array | null, b: Uint8Array | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && toBuffer(a).equals(b);
}

function tooBig(sides: Uint8Array[], opts: MergeOptions): boolean {
  const maxBytes = opts.maxMergeBytes ?? DEFAULT_MAX_MERGE_BYTES;
  const maxLines = opts.maxMergeLines ?? DEFAULT_MAX_MERGE_LINES;
  // Bytes first: free. A file can't have more lines than bytes, so only count
  // lines (a memchr scan) when the byte length alone doesn't settle it.
  return sides.some((s) => s.length > maxBytes || (s.length > maxLines && countLines(s) > maxLines));
}

// Strips a leading BOM (JSON.parse rejects it); current's is put back on output.
const utf8 = new TextDecoder('utf-8', { fatal: true });
const hasBom = (b: Uint8Array) => b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf;

/** Strict UTF-8 decode; null if the bytes are not valid UTF-8 (then not JSON). */
function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}

/** JSON merge if all present sides are UTF-8 JSON, else null (caller uses text). */
function tryJson(base: Uint8Array | null, current: Uint8Array, incoming: Uint8Array) {
  const b = base === null ? null : decodeUtf8(base);
  const c = decodeUtf8(current);
  const i = decodeUtf8(incoming);
  if ((base !== null && b === null) || c === null || i === null) return null;
  const r = mergeJson(b, c, i);
  if (!r.ok) return null;
  // Unchanged-from-current is returned as the caller's own bytes, not re-encoded.
  const result = r.result === c ? current : Buffer.from((hasBom(current) ? '\ufeff' : '') + r.result, 'utf8');
  return { clean: r.clean, result, pointers: r.pointers };
}

/** `smart` for a conflict: content-merge text/JSON; otherwise the table's row. */
function smartMerge(input: FileMergeInput, kind: ConflictKind, opts: MergeOptions): FileMergeResult {
  const { base, current, incoming } = input;
  const fallback: FileMergeResult = { result: current, conflict: { kind, status: 'resolved', resolution: 'current' } };
  // modify/delete has nothing to merge; add/add merges against an empty base.
  if (current === null || incoming === null || kind === 'binary') return fallback;
  const sides = base === null ? [current, incoming] : [base, current, incoming];
  if (kind === 'add_add' && sides.some(isBinary)) return fallback;
  if (tooBig(sides, opts)) return fallback;

  if (/\.json$/i.test(input.path)) {
    const j = tryJson(base, current, incoming);
    if (j) {
      if (j.clean) return { result: j.result, conflict: null };
      return { result: j.result, conflict: { kind, status: 'resolved', resolution: 'current', pointers: j.pointers } };
    }
  }
  const t = mergeText(base, current, incoming);
  if (t.clean) return { result: t.result, conflict: null };
  return { result: t.result, conflict: { kind, status: 'resolved', resolution: 'current' } };
}

export function mergeFile(input: FileMergeInput, opts: MergeOptions = {}): FileMergeResult {
  const { base, current, incoming, strategy } = input;
  // Same on both sides (incl. delete/delete), or changed on one side only: no conflict.
  if (sameBytes(current, incoming)) return { result: current, conflict: null };
  if (sameBytes(base, current)) return { result: incoming, conflict: null };
  if (sameBytes(base, incoming)) return { result: current, conflict: null };

  const kind = conflictKind(base, current, incoming);
  if (strategy === 'smart') return smartMerge(input, kind, opts);
  const row = STRATEGY_TABLE[strategy];
  if (!row) throw new Error(`unknown merge strategy: ${String(strategy)}`);
  return {
    result: row.take === 'current' ? current : incoming,
    conflict: { kind, status: row.status, resolution: row.resolution },
  };
}
