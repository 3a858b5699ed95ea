// Line-level three-way (diff3) merge that is byte-exact.
//
// A line is its bytes up to and including "\n" ("a\r\n", "b\n"; a last line may
// lack it), so a change of only the line ending or of the final newline is a real
// change of that line. Work is done on bytes: regions are byte ranges that always
// start at line boundaries, which keeps output exact and lets the common prefix
// and suffix (most of a file, typically) be skipped with native memcmp instead of
// being split into lines. Only the differing middle is split (as latin1, where one
// byte is one char, so nothing is re-encoded) and diffed: lines unique to both
// sides anchor the diff (as in patience diff), Myers (`diff`) fills the gaps.
import { diffArrays } from 'diff';

export type TextInput = string | Uint8Array | null;

export interface TextMergeResult {
  /** true when no hunk conflicted */
  clean: boolean;
  /** merged bytes; conflicting hunks hold the current side's lines */
  result: Buffer;
  /** number of conflicting hunks */
  conflicts: number;
}

/**
 * Edit distance (in lines) above which Myers is abandoned for a gap between unique
 * anchor lines, and the gap is treated as one replaced block. jsdiff's Myers costs
 * ~D² allocations; this bounds the worst case (a file rewritten wholesale) while
 * real edits between anchors are far smaller. The fallback is still a correct
 * diff, only coarser (so more likely to conflict).
 */
export const DEFAULT_MAX_EDIT_LENGTH = 1000;

/** base bytes [bs, be) became side bytes [ss, se); all four are line boundaries. */
interface Region { bs: number; be: number; ss: number; se: number }

export function toBuffer(input: TextInput): Buffer {
  if (input === null) return Buffer.alloc(0);
  if (typeof input === 'string') return Buffer.from(input, 'utf8');
  return Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
}

/** Line count (a last line without "\n" counts), without allocating. */
export function countLines(bytes: Uint8Array): number {
  const buf = toBuffer(bytes);
  let n = 0;
  let pos = 0;
  for (let nl = buf.indexOf(10); nl !== -1; nl = buf.indexOf(10, pos)) {
    n++;
    pos = nl + 1;
  }
  return pos < buf.length ? n + 1 : n;
}

/** Ranges [a0, a0+len) and [b0, b0+len) are byte-equal (native memcmp). */
function eqRange(a: Buffer, a0: number, b: Buffer, b0: number, len: number): boolean {
  return a.compare(b, b0, b0 + len, a0, a0 + len) === 0;
}

/**
 * Length of the common prefix (fromEnd=false) or suffix (fromEnd=true) of a and b,
 * at most max. Gallops over doubling chunks with memcmp, then bisects the chunk
 * that differs: O(log n) native calls instead of a JS loop per byte.
 */
function commonRun(a: Buffer, b: Buffer, max: number, fromEnd: boolean): number {
  // compare the run's bytes [k, k+len), counted from the start or from the end
  const eq = (k: number, len: number): boolean =>
    fromEnd ? eqRange(a, a.length - k - len, b, b.length - k - len, len) : eqRange(a, k, b, k, len);
  let done = 0;
  for (let chunk = 256; done < max; chunk *= 2) {
    const len = Math.min(chunk, max - done);
    if (eq(done, len)) {
      done += len;
      continue;
    }
    let hi = done + len; // the first difference lies in [done, hi)
    while (hi - done > 64) {
      const mid = (done + hi) >>> 1;
      if (eq(done, mid - done)) done = mid;
      else hi = mid;
    }
    // a native call costs more than a few dozen byte compares
    if (fromEnd) while (a[a.length - 1 - done] === b[b.length - 1 - done]) done++;
    else while (a[done] === b[done]) done++;
    return done;
  }
  return done;
}

const isLineStart = (buf: Buffer, pos: number) => pos === 0 || buf[pos - 1] === 10;

/** Split [from, to) (which starts at a line boundary) into lines, as latin1 strings. */
function lines(buf: Buffer, from: number, to: number): string[] {
  const s = buf.toString('latin1', from, to);
  const out: string[] = [];
  let start = 0;
  for (let nl = s.indexOf('\n'); nl !== -1; nl = s.indexOf('\n', start)) {
    out.push(s.slice(start, nl + 1));
    start = nl + 1;
  }
  if (start < s.length) out.push(s.slice(start));
  return out;
}

/** Map lines to ints shared by both inputs so Myers compares with === on numbers. */
function intern(ls: string[], table: Map<string, number>): number[] {
  const ids = new Array<number>(ls.length);
  for (let k = 0; k < ls.length; k++) {
    let id = table.get(ls[k]);
    if (id === undefined) table.set(ls[k], (id = table.size));
    ids[k] = id;
  }
  return ids;
}

/** A run of lines: common to both, or only in the old (removed) / new (added) input. */
interface Run { count: number; added: boolean; removed: boolean }

/**
 * Lines occurring exactly once in each input, as index pairs increasing in both
 * (the longest such chain, found by patience sorting in O(k log k)). Such lines
 * are near-certain matches, so Myers only has to run on the gaps between them:
 * O(N·D) over the whole file becomes a sum over small gaps (patience diff).
 */
function uniqueAnchors(a: number[], b: number[], nIds: number): Array<[number, number]> {
  const countA = new Int32Array(nIds), countB = new Int32Array(nIds), posB = new Int32Array(nIds);
  for (const id of a) countA[id]++;
  for (let k = 0; k < b.length; k++) {
    countB[b[k]]++;
    posB[b[k]] = k;
  }
  const pairs: Array<[number, number]> = [];
  for (let k = 0; k < a.length; k++) if (countA[a[k]] === 1 && countB[a[k]] === 1) pairs.push([k, posB[a[k]]]);
  // Longest chain increasing in b: tails[len] = index of the pair ending the best chain of length len+1.
  const tails: number[] = [], prev = new Int32Array(pairs.length);
  for (let k = 0; k < pairs.length; k++) {
    let lo = 0, hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (pairs[tails[mid]][1] < pairs[k][1]) lo = mid + 1;
      else hi = mid;
    }
    prev[k] = lo > 0 ? tails[lo - 1] : -1;
    tails[lo] = k;
  }
  const chain: Array<[number, number]> = [];
  for (let k = tails.length ? tails[tails.length - 1] : -1; k !== -1; k = prev[k]) chain.push(pairs[k]);
  return chain.reverse();
}

/**
 * Myers on a[a0, a1) vs b[b0, b1), appended to runs. Past maxEditLength, or when the
 * multiset of lines already proves the distance is larger, the gap becomes one
 * replaced block (a valid, coarser diff) instead of spending D² work.
 */
function diffGap(a: number[], a0: number, a1: number, b: number[], b0: number, b1: number, maxEditLength: number, runs: Run[]): void {
  const na = a1 - a0, nb = b1 - b0;
  if (na === 0 && nb === 0) return;
  const replace = () => {
    if (na) runs.push({ count: na, added: false, removed: true });
    if (nb) runs.push({ count: nb, added: true, removed: false });
  };
  if (na === 0 || nb === 0) return replace();
  if (na === 1 && nb === 1) {
    if (a[a0] === b[b0]) runs.push({ count: 1, added: false, removed: false });
    else replace();
    return;
  }
  if (na + nb > maxEditLength) {
    // D ≥ na + nb − 2·(lines the two can share at most)
    const avail = new Map<number, number>();
    for (let k = a0; k < a1; k++) avail.set(a[k], (avail.get(a[k]) ?? 0) + 1);
    let shared = 0;
    for (let k = b0; k < b1; k++) {
      const n = avail.get(b[k]);
      if (n) {
        shared++;
        avail.set(b[k], n - 1);
      }
    }
    if (na + nb - 2 * shared > maxEditLength) return replace();
  }
  const changes = diffArrays(a.slice(a0, a1), b.slice(b0, b1), { maxEditLength });
  if (!changes) return replace();
  for (const ch of changes) runs.push(ch);
}

/** Line diff of a vs b as runs: anchored on unique lines, Myers in between. */
function diffLines(a: number[], b: number[], nIds: number, maxEditLength: number): Run[] {
  const runs: Run[] = [];
  let a0 = 0, b0 = 0;
  for (const [ai, bi] of uniqueAnchors(a, b, nIds)) {
    diffGap(a, a0, ai, b, b0, bi, maxEditLength, runs);
    runs.push({ count: 1, added: false, removed: false });
    a0 = ai + 1;
    b0 = bi + 1;
  }
  diffGap(a, a0, a.length, b, b0, b.length, maxEditLength, runs);
  return runs;
}

/** Changed regions base→side, ascending; two regions never touch (a common line separates them). */
function diffRegions(base: Buffer, side: Buffer, maxEditLength: number): Region[] {
  const bl = base.length, sl = side.length;
  // Common prefix, cut back to the start of the line where the bytes differ.
  const p = commonRun(base, side, Math.min(bl, sl), false);
  if (p === bl && p === sl) return [];
  const pre = p === 0 ? 0 : base.lastIndexOf(10, p - 1) + 1;
  // Common suffix, cut forward to the first line start it contains in both files.
  let suf = commonRun(base, side, Math.min(bl, sl) - pre, true);
  if (!isLineStart(base, bl - suf) || !isLineStart(side, sl - suf)) {
    const nl = base.indexOf(10, bl - suf);
    suf = nl === -1 ? 0 : bl - nl - 1;
  }
  const whole: Region = { bs: pre, be: bl - suf, ss: pre, se: sl - suf };
  if (whole.bs === whole.be || whole.ss === whole.se) return [whole]; // pure insert/delete

  const bLines = lines(base, whole.bs, whole.be), sLines = lines(side, whole.ss, whole.se);
  const table = new Map<string, number>();
  const bIds = intern(bLines, table), sIds = intern(sLines, table);
  const changes = diffLines(bIds, sIds, table.size, maxEditLength);

  // Walk the change list, turning line counts into byte offsets.
  const regions: Region[] = [];
  let b = pre, s = pre, bi = 0, si = 0;
  let cur: Region | null = null;
  for (const ch of changes) {
    if (!ch.added && !ch.removed) {
      if (cur) regions.push(cur);
      cur = null;
      let len = 0; // common lines: same bytes on both sides
      for (let k = 0; k < ch.count; k++) len += bLines[bi++].length;
      b += len;
      s += len;
      si += ch.count;
      continue;
    }
    cur ??= { bs: b, be: b, ss: s, se: s };
    if (ch.removed) for (let k = 0; k < ch.count; k++) cur.be = b += bLines[bi++].length;
    else for (let k = 0; k < ch.count; k++) cur.se = s += sLines[si++].length;
  }
  if (cur) regions.push(cur);
  return regions;
}

/**
 * diff3 merge. `base` null means an empty base (add/add). Strings are UTF-8 encoded.
 * Changes that overlap or touch (edits on adjacent lines, or an insertion right
 * next to another side's edit) form one hunk, as in git; a hunk changed by both
 * sides identically is clean; otherwise it conflicts and keeps current's lines,
 * while incoming's non-conflicting hunks are still applied.
 */
export function mergeText(
  base: TextInput,
  current: TextInput,
  incoming: TextInput,
  opts: { maxEditLength?: number } = {},
): TextMergeResult {
  const maxEdit = opts.maxEditLength ?? DEFAULT_MAX_EDIT_LENGTH;
  const b = toBuffer(base), c = toBuffer(current), i = toBuffer(incoming);
  const rc = diffRegions(b, c, maxEdit);
  const ri = diffRegions(b, i, maxEdit);

  const out: Buffer[] = [];
  let pos = 0; // next base byte not yet emitted
  let conflicts = 0;
  let p = 0, q = 0;
  while (p < rc.length || q < ri.length) {
    // Start a hunk at the earliest region, then absorb every region (either side)
    // that starts at or before the hunk's end; `<=` makes touching changes conflict.
    let cFirst: Region | undefined, cLast: Region | undefined;
    let iFirst: Region | undefined, iLast: Region | undefined;
    if (q >= ri.length || (p < rc.length && rc[p].bs <= ri[q].bs)) cFirst = cLast = rc[p++];
    else iFirst = iLast = ri[q++];
    const lo = (cFirst ?? iFirst)!.bs;
    let hi = (cFirst ?? iFirst)!.be;
    for (;;) {
      if (p < rc.length && rc[p].bs <= hi) {
        cLast = rc[p++];
        cFirst ??= cLast;
        hi = Math.max(hi, cLast.be);
      } else if (q < ri.length && ri[q].bs <= hi) {
        iLast = ri[q++];
        iFirst ??= iLast;
        hi = Math.max(hi, iLast.be);
      } else break;
    }

    out.push(b.subarray(pos, lo));
    pos = hi;
    // A side's text for base [lo, hi): bytes outside its own regions are
    // unchanged, so the ends map to the side by a fixed offset.
    if (!cFirst) {
      out.push(i.subarray(iFirst!.ss - (iFirst!.bs - lo), iLast!.se + (hi - iLast!.be)));
      continue;
    }
    const cs = cFirst.ss - (cFirst.bs - lo), ce = cLast!.se + (hi - cLast!.be);
    if (iFirst) {
      const is = iFirst.ss - (iFirst.bs - lo), ie = iLast!.se + (hi - iLast!.be);
      if (ie - is !== ce - cs || !eqRange(c, cs, i, is, ce - cs)) conflicts++;
    }
    out.push(c.subarray(cs, ce)); // current-only, identical change, or conflict → current
  }
  out.push(b.subarray(pos));

  return { clean: conflicts === 0, result: Buffer.concat(out), conflicts };
}
