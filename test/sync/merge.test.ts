import { describe, expect, it } from 'vitest';
import {
  conflictKind,
  isBinary,
  mergeFile,
  mergeJson,
  mergeText,
  type ConflictKind,
  type FileMergeResult,
  type MergeOptions,
  type Strategy,
} from '../../src/sync/merge/index.js';

type Side = string | Uint8Array | null;

const bytes = (s: Side): Uint8Array | null => (s === null ? null : typeof s === 'string' ? Buffer.from(s, 'utf8') : s);
/** latin1 is a byte↔char bijection, so comparing these strings compares exact bytes. */
const show = (s: Side): string | null => {
  const b = bytes(s);
  return b === null ? null : Buffer.from(b).toString('latin1');
};
const bin = (...xs: number[]) => Uint8Array.from(xs);

const STRATEGIES: Strategy[] = ['current', 'incoming', 'smart', 'manual'];

function run(path: string, base: Side, current: Side, incoming: Side, strategy: Strategy, opts?: MergeOptions): FileMergeResult {
  return mergeFile({ path, base: bytes(base), current: bytes(current), incoming: bytes(incoming), strategy }, opts);
}

// ---------------------------------------------------------------------------
// No conflict: one side only, or both the same. Every strategy gives the same.
// ---------------------------------------------------------------------------

interface CleanCase { name: string; path?: string; base: Side; current: Side; incoming: Side; expected: Side }

const cleanCases: CleanCase[] = [
  { name: 'nothing changed', base: 'a\n', current: 'a\n', incoming: 'a\n', expected: 'a\n' },
  { name: 'only incoming changed', base: 'a\nb\n', current: 'a\nb\n', incoming: 'a\nB\n', expected: 'a\nB\n' },
  { name: 'only current changed', base: 'a\nb\n', current: 'A\nb\n', incoming: 'a\nb\n', expected: 'A\nb\n' },
  { name: 'identical change on both sides', base: 'a\n', current: 'b\n', incoming: 'b\n', expected: 'b\n' },
  { name: 'delete/delete', base: 'a\n', current: null, incoming: null, expected: null },
  { name: 'incoming deleted, current untouched', base: 'a\n', current: 'a\n', incoming: null, expected: null },
  { name: 'current deleted, incoming untouched', base: 'a\n', current: null, incoming: 'a\n', expected: null },
  { name: 'added by incoming only', base: null, current: null, incoming: 'new\n', expected: 'new\n' },
  { name: 'added by current only', base: null, current: 'mine\n', incoming: null, expected: 'mine\n' },
  { name: 'add/add identical', base: null, current: 'same\n', incoming: 'same\n', expected: 'same\n' },
  { name: 'only incoming switched to CRLF', base: 'a\nb\n', current: 'a\nb\n', incoming: 'a\r\nb\r\n', expected: 'a\r\nb\r\n' },
  { name: 'only incoming dropped final newline', base: 'a\nb\n', current: 'a\nb\n', incoming: 'a\nb', expected: 'a\nb' },
  { name: 'incoming emptied the file (empty ≠ absent)', base: 'a\n', current: 'a\n', incoming: '', expected: '' },
  { name: 'current emptied the file', base: 'a\n', current: '', incoming: 'a\n', expected: '' },
  { name: 'both emptied the file', base: 'a\n', current: '', incoming: '', expected: '' },
  { name: 'binary changed by incoming only', base: bin(0, 1), current: bin(0, 1), incoming: bin(0, 2), expected: bin(0, 2) },
  { name: 'json changed by incoming only (bytes verbatim)', path: 'a.json', base: '{"a":1}', current: '{"a":1}', incoming: '{ "a" : 2 }', expected: '{ "a" : 2 }' },
  // Rename = old path deleted + new path added; each path merges on its own.
  { name: 'rename by app: old path', path: 'old.md', base: 'doc\n', current: 'doc\n', incoming: null, expected: null },
  { name: 'rename by app: new path', path: 'new.md', base: null, current: null, incoming: 'doc\n', expected: 'doc\n' },
  { name: 'rename by user: old path', path: 'old.md', base: 'doc\n', current: null, incoming: 'doc\n', expected: null },
  { name: 'rename by user: new path', path: 'new.md', base: null, current: 'doc\n', incoming: null, expected: 'doc\n' },
];

describe('mergeFile: no conflict', () => {
  for (const c of cleanCases) {
    for (const strategy of STRATEGIES) {
      it(`${c.name} [${strategy}]`, () => {
        const r = run(c.path ?? 'f.md', c.base, c.current, c.incoming, strategy);
        expect(show(r.result)).toBe(show(c.expected));
        expect(r.conflict).toBeNull();
      });
    }
  }
});

// ---------------------------------------------------------------------------
// Both sides changed differently. `current`, `incoming` and `manual` are the
// same whole-file rule for every case; `smart` is given per case.
// ---------------------------------------------------------------------------

interface ConflictCase {
  name: string;
  path?: string;
  base: Side;
  current: Side;
  incoming: Side;
  kind: ConflictKind;
  opts?: MergeOptions;
  /** smart's result, and whether something still conflicted (then resolved/current) */
  smart: { result: Side; conflicted: boolean; pointers?: string[] };
}

const conflictCases: ConflictCase[] = [
  // --- text ---
  {
    name: 'text: non-overlapping edits merge cleanly',
    base: '1\n2\n3\n4\n5\n', current: 'one\n2\n3\n4\n5\n', incoming: '1\n2\n3\n4\nfive\n',
    kind: 'content', smart: { result: 'one\n2\n3\n4\nfive\n', conflicted: false },
  },
  {
    name: 'text: identical edit on both sides plus separate edits',
    base: 'a\nb\nc\nd\ne\n', current: 'A\nb\nc\nd\ne\nf\n', incoming: 'A\nb\nC\nd\ne\n',
    kind: 'content', smart: { result: 'A\nb\nC\nd\ne\nf\n', conflicted: false },
  },
  {
    name: 'text: same line edited differently keeps current, other incoming hunks still merge',
    base: '1\n2\n3\n4\n5\n6\n', current: '1\nCUR\n3\n4\n5\n6\n', incoming: '1\nINC\n3\n4\n5\nsix\n',
    kind: 'content', smart: { result: '1\nCUR\n3\n4\n5\nsix\n', conflicted: true },
  },
  {
    name: 'text: adjacent-line edits conflict (as in git)',
    base: 'a\nb\nc\nd\n', current: 'a\nB\nc\nd\n', incoming: 'a\nb\nC\nd\n',
    kind: 'content', smart: { result: 'a\nB\nc\nd\n', conflicted: true },
  },
  {
    name: 'text: insertion right after a line the other side edited conflicts',
    base: 'a\nb\nc\n', current: 'a\nB\nc\n', incoming: 'a\nb\nnew\nc\n',
    kind: 'content', smart: { result: 'a\nB\nc\n', conflicted: true },
  },
  {
    name: 'text: different insertions at the same place conflict',
    base: 'a\nz\n', current: 'a\nmine\nz\n', incoming: 'a\ntheirs\nz\n',
    kind: 'content', smart: { result: 'a\nmine\nz\n', conflicted: true },
  },
  {
    name: 'text: insertions at both ends merge',
    base: 'a\nb\nc\n', current: 'top\na\nb\nc\n', incoming: 'a\nb\nc\nbottom\n',
    kind: 'content', smart: { result: 'top\na\nb\nc\nbottom\n', conflicted: false },
  },
  {
    name: 'text: deletion on one side, distant edit on the other',
    base: '1\n2\n3\n4\n5\n', current: '1\n3\n4\n5\n', incoming: '1\n2\n3\n4\nFIVE\n',
    kind: 'content', smart: { result: '1\n3\n4\nFIVE\n', conflicted: false },
  },
  {
    name: 'text: CRLF file, non-overlapping edits keep CRLF',
    base: 'a\r\nb\r\nc\r\nd\r\n', current: 'A\r\nb\r\nc\r\nd\r\n', incoming: 'a\r\nb\r\nc\r\nD\r\n',
    kind: 'content', smart: { result: 'A\r\nb\r\nc\r\nD\r\n', conflicted: false },
  },
  {
    name: 'text: mixed line endings are kept per line; an EOL-only change is a change',
    base: 'a\nb\r\nc\nd\n', current: 'a\r\nb\r\nc\nd\n', incoming: 'a\nb\r\nc\nD\n',
    kind: 'content', smart: { result: 'a\r\nb\r\nc\nD\n', conflicted: false },
  },
  {
    name: 'text: EOL-only change vs content change of the same line conflicts',
    base: 'a\nb\n', current: 'a\r\nb\n', incoming: 'x\nb\n',
    kind: 'content', smart: { result: 'a\r\nb\n', conflicted: true },
  },
  {
    name: 'text: no final newline kept on both merged ends',
    base: 'x\ny\nz', current: 'X\ny\nz', incoming: 'x\ny\nZ',
    kind: 'content', smart: { result: 'X\ny\nZ', conflicted: false },
  },
  {
    name: 'text: incoming adds the final newline, current edits far away',
    base: 'a\nb\nc', current: 'A\nb\nc', incoming: 'a\nb\nc\n',
    kind: 'content', smart: { result: 'A\nb\nc\n', conflicted: false },
  },
  {
    name: 'text: final-newline change vs edit of the last line conflicts',
    base: 'a\nb', current: 'a\nb\n', incoming: 'a\nB',
    kind: 'content', smart: { result: 'a\nb\n', conflicted: true },
  },
  {
    name: 'text: empty base, both wrote content',
    base: '', current: 'a\n', incoming: 'b\n',
    kind: 'content', smart: { result: 'a\n', conflicted: true },
  },
  {
    name: 'text: current emptied, incoming appended',
    base: 'a\n', current: '', incoming: 'a\nb\n',
    kind: 'content', smart: { result: '', conflicted: true },
  },
  {
    name: 'text: non-UTF-8 bytes round-trip exactly',
    base: bin(0x61, 0x0a, 0xe9, 0x0a, 0x63, 0x0a),
    current: bin(0x41, 0x0a, 0xe9, 0x0a, 0x63, 0x0a),
    incoming: bin(0x61, 0x0a, 0xe9, 0x0a, 0xff, 0xfe, 0x0a),
    kind: 'content', smart: { result: bin(0x41, 0x0a, 0xe9, 0x0a, 0xff, 0xfe, 0x0a), conflicted: false },
  },
  {
    name: 'text: UTF-8 multibyte content',
    base: 'é\nü\nß\n', current: 'É\nü\nß\n', incoming: 'é\nü\n🙂\n',
    kind: 'content', smart: { result: 'É\nü\n🙂\n', conflicted: false },
  },
  {
    name: 'text: a .json path that is not JSON on one side falls back to text',
    path: 'settings.json',
    base: '{\n  "a": 1,\n  "b": 2\n}\n',
    current: '{\n  // mine\n  "a": 1,\n  "b": 2\n}\n',
    incoming: '{\n  "a": 1,\n  "b": 3\n}\n',
    kind: 'content', smart: { result: '{\n  // mine\n  "a": 1,\n  "b": 3\n}\n', conflicted: false },
  },
  {
    name: 'text: JSON content under a non-.json path is merged as text',
    path: 'notes.txt',
    base: '{"a":1,"b":1}', current: '{"a":2,"b":1}', incoming: '{"a":1,"b":2}',
    kind: 'content', smart: { result: '{"a":2,"b":1}', conflicted: true },
  },

  // --- JSON ---
  {
    name: 'json: nested keys merge, current indent and newline kept',
    path: 'config.json',
    base: '{"a":{"x":1,"y":2},"b":1}',
    current: '{\n  "a": {\n    "x": 9,\n    "y": 2\n  },\n  "b": 1\n}\n',
    incoming: '{"a":{"x":1,"y":3},"b":1,"c":[1,2]}',
    kind: 'content',
    smart: { result: '{\n  "a": {\n    "x": 9,\n    "y": 3\n  },\n  "b": 1,\n  "c": [\n    1,\n    2\n  ]\n}\n', conflicted: false },
  },
  {
    name: 'json: every conflicting pointer is reported, the rest merges',
    path: 'settings.json',
    base: '{"model":"a","permissions":{"allow":["x"],"deny":[]},"theme":"dark"}',
    current: '{"model":"b","permissions":{"allow":["x","y"],"deny":[]},"theme":"dark"}',
    incoming: '{"model":"c","permissions":{"allow":["z"],"deny":["rm"]},"theme":"light"}',
    kind: 'content',
    smart: {
      result: '{"model":"b","permissions":{"allow":["x","y"],"deny":["rm"]},"theme":"light"}',
      conflicted: true,
      pointers: ['/model', '/permissions/allow'],
    },
  },
  {
    name: 'json: array changed on one side only is taken whole',
    path: 'a.json',
    base: '{"list":[1,2],"n":1}', current: '{"list":[1,2],"n":2}', incoming: '{"list":[2,1,3],"n":1}',
    kind: 'content', smart: { result: '{"list":[2,1,3],"n":2}', conflicted: false },
  },
  {
    name: "json: current's key order kept, incoming's new keys appended in incoming's order, 4-space indent",
    path: 'a.json',
    base: '{"a":1,"b":1}',
    current: '{\n    "b": 2,\n    "a": 1\n}',
    incoming: '{"z":0,"a":1,"y":0,"b":1}',
    kind: 'content', smart: { result: '{\n    "b": 2,\n    "a": 1,\n    "z": 0,\n    "y": 0\n}', conflicted: false },
  },
  {
    name: 'json: tabs, CRLF and final newline of current are kept',
    path: 'a.json',
    base: '{"a":1,"b":1}',
    current: '{\r\n\t"a": 2,\r\n\t"b": 1\r\n}\r\n',
    incoming: '{\n  "a": 1,\n  "b": 1,\n  "c": {"d": true}\n}\n',
    kind: 'content', smart: { result: '{\r\n\t"a": 2,\r\n\t"b": 1,\r\n\t"c": {\r\n\t\t"d": true\r\n\t}\r\n}\r\n', conflicted: false },
  },
  {
    name: 'json: compact current stays compact',
    path: 'a.json',
    base: '{"a":1,"b":1}', current: '{"a":2,"b":1}', incoming: '{"a":1,"b":2}',
    kind: 'content', smart: { result: '{"a":2,"b":2}', conflicted: false },
  },
  {
    name: 'json: key deleted on one side, unchanged on the other, is deleted',
    path: 'a.json',
    base: '{"a":1,"b":1,"c":1}', current: '{"a":1,"b":2,"c":1}', incoming: '{"a":1,"b":1}',
    kind: 'content', smart: { result: '{"a":1,"b":2}', conflicted: false },
  },
  {
    name: 'json: key deleted by current, modified by incoming → conflict, stays deleted',
    path: 'a.json',
    base: '{"a":1,"b":1}', current: '{"b":1}', incoming: '{"a":2,"b":3}',
    kind: 'content', smart: { result: '{"b":3}', conflicted: true, pointers: ['/a'] },
  },
  {
    name: 'json: key modified by current, deleted by incoming → conflict, current value kept',
    path: 'a.json',
    base: '{"a":1,"b":1}', current: '{"a":2,"b":1}', incoming: '{"b":3}',
    kind: 'content', smart: { result: '{"a":2,"b":3}', conflicted: true, pointers: ['/a'] },
  },
  {
    name: 'json: same key added on both sides with equal value is fine',
    path: 'a.json',
    base: '{"a":1}', current: '{"a":1,"n":{"k":[1]},"c":1}', incoming: '{"a":2,"n":{"k":[1]}}',
    kind: 'content', smart: { result: '{"a":2,"n":{"k":[1]},"c":1}', conflicted: false },
  },
  {
    name: 'json: pointers escape "~" and "/" (RFC 6901)',
    path: 'a.json',
    base: '{"a/b":1,"m~n":{"x":1}}', current: '{"a/b":2,"m~n":{"x":2}}', incoming: '{"a/b":3,"m~n":{"x":3}}',
    kind: 'content', smart: { result: '{"a/b":2,"m~n":{"x":2}}', conflicted: true, pointers: ['/a~1b', '/m~0n/x'] },
  },
  {
    name: "json: everything conflicted → current's exact bytes, odd formatting included",
    path: 'a.json',
    base: '{"a":1}', current: '{ "a" :2 }', incoming: '{"a":3}',
    kind: 'content', smart: { result: '{ "a" :2 }', conflicted: true, pointers: ['/a'] },
  },
  {
    name: 'json: root type changed on both sides → root pointer ""',
    path: 'a.json',
    base: '{"a":1}', current: '[1]', incoming: '"s"',
    kind: 'content', smart: { result: '[1]', conflicted: true, pointers: [''] },
  },
  {
    name: "json: current's UTF-8 BOM is kept",
    path: 'a.json',
    base: '\ufeff{"a":1,"b":1}', current: '\ufeff{"a":2,"b":1}', incoming: '{"a":1,"b":2}',
    kind: 'content', smart: { result: '\ufeff{"a":2,"b":2}', conflicted: false },
  },
  {
    name: 'json: "__proto__" is an ordinary key',
    path: 'a.json',
    base: '{"__proto__":{"x":1},"a":1}', current: '{"__proto__":{"x":2},"a":1}', incoming: '{"__proto__":{"x":1},"a":2}',
    kind: 'content', smart: { result: '{"__proto__":{"x":2},"a":2}', conflicted: false },
  },
  // JSON.parse would silently change what these sides say, so they get the text merge.
  {
    name: 'json: an integer beyond 2^53 → text merge (on one line: conflict, current kept)',
    path: 'a.json',
    base: '{"id": 12345678901234567890, "a": 1, "b": 1}',
    current: '{"id": 12345678901234567890, "a": 2, "b": 1}',
    incoming: '{"id": 12345678901234567890, "a": 1, "b": 2}',
    kind: 'content', smart: { result: '{"id": 12345678901234567890, "a": 2, "b": 1}', conflicted: true },
  },
  {
    name: 'json: an integer beyond 2^53 → text merge keeps it exactly',
    path: 'a.json',
    base: '{\n  "id": 12345678901234567890,\n  "a": 1,\n  "m": 0,\n  "b": 1\n}\n',
    current: '{\n  "id": 12345678901234567890,\n  "a": 2,\n  "m": 0,\n  "b": 1\n}\n',
    incoming: '{\n  "id": 12345678901234567890,\n  "a": 1,\n  "m": 0,\n  "b": 2\n}\n',
    kind: 'content', smart: { result: '{\n  "id": 12345678901234567890,\n  "a": 2,\n  "m": 0,\n  "b": 2\n}\n', conflicted: false },
  },
  {
    name: 'json: 1e400 (overflows a double) on incoming only → text merge keeps it',
    path: 'a.json',
    base: '{\n  "a": 1,\n  "m": 0,\n  "b": 1\n}\n',
    current: '{\n  "a": 2,\n  "m": 0,\n  "b": 1\n}\n',
    incoming: '{\n  "a": 1,\n  "m": 0,\n  "b": 1e400\n}\n',
    kind: 'content', smart: { result: '{\n  "a": 2,\n  "m": 0,\n  "b": 1e400\n}\n', conflicted: false },
  },
  {
    name: 'json: more digits than a double keeps → text merge keeps them',
    path: 'a.json',
    base: '{\n  "f": 0.300000000000000044,\n  "a": 1,\n  "m": 0,\n  "b": 1\n}\n',
    current: '{\n  "f": 0.300000000000000044,\n  "a": 2,\n  "m": 0,\n  "b": 1\n}\n',
    incoming: '{\n  "f": 0.300000000000000044,\n  "a": 1,\n  "m": 0,\n  "b": 2\n}\n',
    kind: 'content', smart: { result: '{\n  "f": 0.300000000000000044,\n  "a": 2,\n  "m": 0,\n  "b": 2\n}\n', conflicted: false },
  },
  {
    name: 'json: duplicate keys in current → text merge keeps both',
    path: 'a.json',
    base: '{\n  "k": 1,\n  "a": 1,\n  "m": 0,\n  "b": 1\n}\n',
    current: '{\n  "k": 1,\n  "k": 2,\n  "a": 2,\n  "m": 0,\n  "b": 1\n}\n',
    incoming: '{\n  "k": 1,\n  "a": 1,\n  "m": 0,\n  "b": 2\n}\n',
    kind: 'content', smart: { result: '{\n  "k": 1,\n  "k": 2,\n  "a": 2,\n  "m": 0,\n  "b": 2\n}\n', conflicted: false },
  },
  {
    name: 'json: numbers a double holds exactly still get the key-level merge (1.0 written as 1)',
    path: 'a.json',
    base: '{"max":9007199254740991,"f":0.1,"e":-2.5e-3,"one":1.0,"a":1,"b":1}',
    current: '{"max":9007199254740991,"f":0.1,"e":-2.5e-3,"one":1.0,"a":2,"b":1}',
    incoming: '{"max":9007199254740991,"f":0.1,"e":-2.5e-3,"one":1.0,"a":1,"b":2}',
    kind: 'content', smart: { result: '{"max":9007199254740991,"f":0.1,"e":-0.0025,"one":1,"a":2,"b":2}', conflicted: false },
  },

  // --- add/add ---
  {
    name: 'add/add text: nothing in common → current',
    base: null, current: 'a\nb\n', incoming: 'a\nb\nc\n',
    kind: 'add_add', smart: { result: 'a\nb\n', conflicted: true },
  },
  {
    name: 'add/add json: disjoint keys merge against an empty base',
    path: 'a.json',
    base: null, current: '{\n  "a": 1\n}\n', incoming: '{"b":2}',
    kind: 'add_add', smart: { result: '{\n  "a": 1,\n  "b": 2\n}\n', conflicted: false },
  },
  {
    name: 'add/add json: differing values at the same key conflict',
    path: 'a.json',
    base: null, current: '{"a":1,"x":1}', incoming: '{"a":2,"y":2}',
    kind: 'add_add', smart: { result: '{"a":1,"x":1,"y":2}', conflicted: true, pointers: ['/a'] },
  },
  {
    name: 'add/add binary: no content merge',
    base: null, current: bin(0, 1), incoming: bin(0, 2),
    kind: 'add_add', smart: { result: bin(0, 1), conflicted: true },
  },

  // --- modify/delete ---
  {
    name: 'modify/delete: current modified, incoming deleted',
    base: 'a\n', current: 'A\n', incoming: null,
    kind: 'modify_delete', smart: { result: 'A\n', conflicted: true },
  },
  {
    name: 'modify/delete: current deleted, incoming modified',
    base: 'a\n', current: null, incoming: 'A\n',
    kind: 'modify_delete', smart: { result: null, conflicted: true },
  },
  {
    name: 'modify/delete: JSON is not merged either',
    path: 'a.json',
    base: '{"a":1}', current: '{"a":1,"b":2}', incoming: null,
    kind: 'modify_delete', smart: { result: '{"a":1,"b":2}', conflicted: true },
  },
  {
    name: 'modify/delete: binary',
    base: bin(0, 1), current: null, incoming: bin(0, 2),
    kind: 'modify_delete', smart: { result: null, conflicted: true },
  },
  {
    name: 'rename by app while user edited the old path (old path)',
    path: 'old.md',
    base: 'doc\n', current: 'doc edited\n', incoming: null,
    kind: 'modify_delete', smart: { result: 'doc edited\n', conflicted: true },
  },

  // --- binary ---
  {
    name: 'binary: both changed',
    base: bin(0, 1, 2), current: bin(0, 1, 3), incoming: bin(0, 1, 4),
    kind: 'binary', smart: { result: bin(0, 1, 3), conflicted: true },
  },
  {
    name: 'binary: a NUL on one side only makes it binary',
    base: 'a\nb\nc\n', current: 'A\nb\nc\n', incoming: bin(0x61, 0x0a, 0x62, 0x0a, 0x00, 0x0a),
    kind: 'binary', smart: { result: 'A\nb\nc\n', conflicted: true },
  },
  {
    name: 'binary: a NUL past 8 KiB does not count, so it merges as text',
    base: 'a\nb\n' + 'x'.repeat(8192) + '\0\n',
    current: 'A\nb\n' + 'x'.repeat(8192) + '\0\n',
    incoming: 'a\nB\n' + 'x'.repeat(8192) + '\0\n',
    kind: 'content', smart: { result: 'A\nb\n' + 'x'.repeat(8192) + '\0\n', conflicted: true },
  },

  // --- size cap: not content-merged, whole file like binary ---
  {
    name: 'size cap: bytes over maxMergeBytes',
    base: '1\n2\n3\n', current: 'one\n2\n3\n', incoming: '1\n2\nthree\n',
    opts: { maxMergeBytes: 8 },
    kind: 'content', smart: { result: 'one\n2\n3\n', conflicted: true },
  },
  {
    name: 'size cap: lines over maxMergeLines',
    base: '1\n2\n3\n4\n', current: 'one\n2\n3\n4\n', incoming: '1\n2\n3\nfour\n',
    opts: { maxMergeLines: 3 },
    kind: 'content', smart: { result: 'one\n2\n3\n4\n', conflicted: true },
  },
  {
    name: 'size cap: exactly at maxMergeLines still merges',
    base: '1\n2\n3\n4\n', current: 'one\n2\n3\n4\n', incoming: '1\n2\n3\nfour\n',
    opts: { maxMergeLines: 4 },
    kind: 'content', smart: { result: 'one\n2\n3\nfour\n', conflicted: false },
  },
  {
    name: 'size cap: applies to JSON too',
    path: 'a.json',
    base: '{"a":1,"b":1}', current: '{"a":2,"b":1}', incoming: '{"a":1,"b":2}',
    opts: { maxMergeBytes: 10 },
    kind: 'content', smart: { result: '{"a":2,"b":1}', conflicted: true },
  },
];

describe('mergeFile: both sides changed', () => {
  for (const c of conflictCases) {
    const path = c.path ?? 'f.md';
    it(`${c.name} [current]`, () => {
      const r = run(path, c.base, c.current, c.incoming, 'current', c.opts);
      expect(show(r.result)).toBe(show(c.current));
      expect(r.conflict).toEqual({ kind: c.kind, status: 'resolved', resolution: 'current' });
    });
    it(`${c.name} [incoming]`, () => {
      const r = run(path, c.base, c.current, c.incoming, 'incoming', c.opts);
      expect(show(r.result)).toBe(show(c.incoming));
      expect(r.conflict).toEqual({ kind: c.kind, status: 'resolved', resolution: 'incoming' });
    });
    it(`${c.name} [manual]`, () => {
      const r = run(path, c.base, c.current, c.incoming, 'manual', c.opts);
      expect(show(r.result)).toBe(show(c.current));
      expect(r.conflict).toEqual({ kind: c.kind, status: 'open', resolution: null });
    });
    it(`${c.name} [smart]`, () => {
      const r = run(path, c.base, c.current, c.incoming, 'smart', c.opts);
      expect(show(r.result)).toBe(show(c.smart.result));
      if (!c.smart.conflicted) expect(r.conflict).toBeNull();
      else {
        const expected = { kind: c.kind, status: 'resolved', resolution: 'current' };
        expect(r.conflict).toEqual(c.smart.pointers ? { ...expected, pointers: c.smart.pointers } : expected);
      }
    });
  }

  it('smart returns current by reference when nothing was merged in (no copy)', () => {
    const current = Buffer.from('{"a":2}');
    const r = mergeFile({ path: 'a.json', base: Buffer.from('{"a":1}'), current, incoming: Buffer.from('{"a":3}'), strategy: 'smart' });
    expect(r.result).toBe(current);
  });

  it('JSON nested too deeply for a recursive merge falls back to text instead of throwing', () => {
    const deep = (leaf: string) => '{"a":'.repeat(100_000) + leaf + '}'.repeat(100_000) + '\n';
    const r = run('a.json', deep('1'), deep('2'), deep('3'), 'smart');
    expect(show(r.result)).toBe(deep('2'));
    expect(r.conflict).toEqual({ kind: 'content', status: 'resolved', resolution: 'current' });
  });

  it('default caps: 20,000 lines merge, 20,001 do not', () => {
    const file = (n: number, first: string, last: string) =>
      [first, ...Array.from({ length: n - 2 }, (_, k) => `l${k}`), last].join('\n') + '\n';
    const ok = run('f.md', file(20_000, 'a', 'z'), file(20_000, 'A', 'z'), file(20_000, 'a', 'Z'), 'smart');
    expect(show(ok.result)).toBe(file(20_000, 'A', 'Z'));
    expect(ok.conflict).toBeNull();
    const big = run('f.md', file(20_001, 'a', 'z'), file(20_001, 'A', 'z'), file(20_001, 'a', 'Z'), 'smart');
    expect(show(big.result)).toBe(file(20_001, 'A', 'z'));
    expect(big.conflict).toEqual({ kind: 'content', status: 'resolved', resolution: 'current' });
  });

  it('default caps: over 1 MiB is not merged', () => {
    const pad = 'x'.repeat(1024 * 1024) + '\n';
    const r = run('f.md', 'a\n' + pad + 'z\n', 'A\n' + pad + 'z\n', 'a\n' + pad + 'Z\n', 'smart');
    expect(show(r.result)).toBe('A\n' + pad + 'z\n');
    expect(r.conflict).toEqual({ kind: 'content', status: 'resolved', resolution: 'current' });
  });
});

// ---------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------

describe('conflictKind / isBinary', () => {
  const cases: [string, Side, Side, Side, ConflictKind][] = [
    ['base absent', null, 'a', 'b', 'add_add'],
    ['base absent beats binary', null, bin(0), bin(1, 0), 'add_add'],
    ['current absent', 'a', null, 'b', 'modify_delete'],
    ['incoming absent', 'a', 'b', null, 'modify_delete'],
    ['NUL in base', bin(0), 'a', 'b', 'binary'],
    ['NUL in incoming', 'a', 'b', bin(9, 0), 'binary'],
    ['text', 'a', 'b', 'c', 'content'],
    ['empty files are text', '', '', 'c', 'content'],
  ];
  for (const [name, b, c, i, kind] of cases) {
    it(name, () => expect(conflictKind(bytes(b), bytes(c), bytes(i))).toBe(kind));
  }

  it('sniffs only the first 8 KiB', () => {
    const at = (k: number) => {
      const b = new Uint8Array(k + 1).fill(97);
      b[k] = 0;
      return b;
    };
    expect(isBinary(at(8191))).toBe(true);
    expect(isBinary(at(8192))).toBe(false);
    expect(isBinary(new Uint8Array(0))).toBe(false);
  });
});

describe('mergeText', () => {
  const cases: [string, string | null, string, string, { result: string; conflicts: number }][] = [
    ['clean', 'a\nb\nc\n', 'A\nb\nc\n', 'a\nb\nC\n', { result: 'A\nb\nC\n', conflicts: 0 }],
    ['two separate conflicts counted', '1\n2\n3\n4\n5\n', 'a\n2\n3\n4\ne\n', 'x\n2\n3\n4\ny\n', { result: 'a\n2\n3\n4\ne\n', conflicts: 2 }],
    ['null base = empty base', null, 'a\n', 'a\n', { result: 'a\n', conflicts: 0 }],
    ['all empty', '', '', '', { result: '', conflicts: 0 }],
    ['trailing whitespace is content', 'a\nm\nb\n', 'a \nm\nb\n', 'a\nm\nb\t\n', { result: 'a \nm\nb\t\n', conflicts: 0 }],
    ['a lone CR does not end a line', 'a\rb\rc\n', 'A\rb\rc\n', 'a\rb\rC\n', { result: 'A\rb\rc\n', conflicts: 1 }],
  ];
  for (const [name, b, c, i, want] of cases) {
    it(name, () => {
      const r = mergeText(b, c, i);
      expect(r.result.toString('latin1')).toBe(want.result);
      expect(r.conflicts).toBe(want.conflicts);
      expect(r.clean).toBe(want.conflicts === 0);
    });
  }

  it('falls back to one whole block past maxEditLength, still byte-exact', () => {
    // "a","b" repeated: no line is unique, so no anchors and Myers sees the whole file
    const file = (f: (k: number) => string) => Array.from({ length: 52 }, (_, k) => `${f(k)}\n`).join('');
    const ab = (k: number) => (k % 2 ? 'b' : 'a');
    const base = file(ab);
    const cur = file((k) => (k % 4 === 1 ? 'B' : ab(k))); // lines 1, 5, …, 49
    const inc = file((k) => (k === 3 ? 'I' : ab(k))); // between two of current's edits
    const fine = mergeText(base, cur, inc);
    expect(fine.result.toString()).toBe(file((k) => (k % 4 === 1 ? 'B' : k === 3 ? 'I' : ab(k))));
    expect(fine.clean).toBe(true);
    // 26 edits > 2: current's lines 1..49 become one block, which swallows line 3
    const coarse = mergeText(base, cur, inc, { maxEditLength: 2 });
    expect(coarse.result.toString()).toBe(cur);
    expect(coarse.conflicts).toBe(1);
  });

  it('moved lines: unique lines out of order still give an exact merge', () => {
    const base = 'A\nB\nC\nD\nE\nF\nG\n';
    const cur = 'D\nE\nA\nB\nC\nF\nG\n'; // D, E moved to the top
    const inc = 'A\nB\nC\nD\nE\nF\ng\n';
    const r = mergeText(base, cur, inc);
    expect(r.result.toString()).toBe('D\nE\nA\nB\nC\nF\ng\n');
    expect(r.clean).toBe(true);
  });

  it('stays fast on large files with many scattered edits', () => {
    const n = 20_000;
    const base = Array.from({ length: n }, (_, k) => `line ${k}\n`);
    const cur = base.map((l, k) => (k % 100 === 0 ? `cur ${k}\n` : l));
    const inc = base.map((l, k) => (k % 100 === 50 ? `inc ${k}\n` : l));
    const want = base.map((l, k) => (k % 100 === 0 ? `cur ${k}\n` : k % 100 === 50 ? `inc ${k}\n` : l));
    const t = performance.now();
    const r = mergeText(base.join(''), cur.join(''), inc.join(''));
    expect(r.result.toString()).toBe(want.join(''));
    expect(r.clean).toBe(true);
    expect(performance.now() - t).toBeLessThan(3000); // generous (~100 ms here): guards against quadratic blow-ups
  });
});

describe('mergeJson', () => {
  it('ok:false when any side is not JSON', () => {
    expect(mergeJson('{', '{}', '{}')).toEqual({ ok: false });
    expect(mergeJson('{}', '{} x', '{}')).toEqual({ ok: false });
    expect(mergeJson(null, '{}', '')).toEqual({ ok: false });
  });

  it('ok:false when a side holds a number or a duplicate key that JSON.parse would lose', () => {
    for (const lossy of ['{"id":12345678901234567890}', '[1e400]', '[1e-400]', '{"a":1,"a":2}', '{"x":{"a":1,"\\u0061":2}}']) {
      expect(mergeJson('{}', lossy, '{}'), lossy).toEqual({ ok: false });
      expect(mergeJson(lossy, '{}', '{}'), lossy).toEqual({ ok: false });
      expect(mergeJson('{}', '{}', lossy), lossy).toEqual({ ok: false });
    }
  });

  it('null base merges against nothing', () => {
    expect(mergeJson(null, '{"a":1}', '{"b":1}')).toEqual({ ok: true, clean: true, result: '{"a":1,"b":1}', pointers: [] });
  });

  it('an empty current object borrows incoming indentation', () => {
    expect(mergeJson('{"a":1}', '{}\n', '{\n   "a": 1,\n   "b": 2\n}')).toEqual({
      ok: true, clean: true, result: '{\n   "b": 2\n}\n', pointers: [],
    });
  });

  it('returns current text untouched when the merge changes nothing in it', () => {
    const current = '{\n  "a" : 1.0,\n  "b": 2\n}';
    expect(mergeJson('{"a":1,"b":1}', current, '{"a":1,"b":1}')).toEqual({ ok: true, clean: true, result: current, pointers: [] });
  });
});

describe('mergeText properties (seeded random inputs)', () => {
  // mulberry32: tiny deterministic PRNG so failures reproduce
  let seed = 0x5eed;
  const rand = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T,>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  // few distinct lines on purpose: repeats make diffs ambiguous; 0xff checks raw bytes
  const line = () => pick(['a', 'b', 'c', '', 'x y', '\xff']) + pick(['\n', '\n', '\r\n']);
  const file = () => {
    const ls = Array.from({ length: Math.floor(rand() * 8) }, line);
    if (ls.length && rand() < 0.3) ls[ls.length - 1] = ls[ls.length - 1].replace(/\r?\n$/, '');
    return ls;
  };
  const edit = (ls: string[]) => {
    const out = ls.slice();
    for (let n = Math.floor(rand() * 3); n > 0; n--) {
      const k = Math.floor(rand() * (out.length + 1));
      const op = rand();
      if (op < 0.35 && k < out.length) out[k] = line();
      else if (op < 0.6 && k < out.length) out.splice(k, 1);
      else out.splice(k, 0, line());
    }
    if (out.length && rand() < 0.15) out[out.length - 1] = out[out.length - 1].replace(/\r?\n$/, '');
    return out;
  };
  const buf = (ls: string[]) => Buffer.from(ls.join(''), 'latin1');

  it('identity laws and symmetry hold on 3000 random merges', () => {
    for (let n = 0; n < 3000; n++) {
      const bl = file();
      const b = buf(bl), c = buf(edit(bl)), i = buf(edit(bl));
      const ctx = JSON.stringify({ b: b.toString('latin1'), c: c.toString('latin1'), i: i.toString('latin1') });
      expect(mergeText(b, c, b).result.equals(c), ctx).toBe(true);
      expect(mergeText(b, b, i).result.equals(i), ctx).toBe(true);
      expect(mergeText(b, i, i).result.equals(i), ctx).toBe(true);
      const ci = mergeText(b, c, i), ic = mergeText(b, i, c);
      expect(ci.conflicts, ctx).toBe(ic.conflicts);
      if (ci.clean) expect(ci.result.equals(ic.result), ctx).toBe(true);
    }
  });
});

describe('comparePaths (UTF-8 byte order without encoding)', () => {
  it('orders like Buffer.compare of the UTF-8 bytes', async () => {
    const { comparePaths } = await import('../../src/sync/profile-merge.js');
    const paths = ['a', 'B', 'a/b', 'a-b', 'é', '\uffff', '\u{1F600}', '\ue000x', 'z', '', 'a\u0000'];
    const byBytes = [...paths].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    const byFn = [...paths].sort(comparePaths);
    expect(byFn).toEqual(byBytes);
  });
});
