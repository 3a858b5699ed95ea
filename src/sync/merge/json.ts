// Key-level three-way merge of JSON documents.
//
// Objects merge key by key, recursively; scalars and arrays are atomic (an array is
// usually an ordered list whose items have no stable identity, so merging items
// would be guesswork). Every conflicting location is reported as an RFC 6901 pointer
// and keeps current's value (or current's absence).
import { parse as parseLossless, toSafeNumberOrThrow } from 'lossless-json';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** Marks a key absent on one side (distinct from a JSON null). */
const MISSING = Symbol('missing');
type Slot = Json | typeof MISSING;

export type JsonMergeResult =
  | { ok: true; clean: boolean; result: string; pointers: string[] }
  | { ok: false };

function isObject(v: Slot): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function get(obj: JsonObject, key: string): Slot {
  // hasOwn, not `in`/index: a key like "__proto__" or "toString" must not hit the prototype.
  return Object.hasOwn(obj, key) ? obj[key] : MISSING;
}

/** Define rather than assign, so a "__proto__" key stays a plain data property. */
function put(obj: JsonObject, key: string, value: Json): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

export function deepEqual(a: Slot, b: Slot): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let k = 0; k < a.length; k++) if (!deepEqual(a[k], b[k])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (!deepEqual(a[k], get(b, k))) return false;
  return true;
}

/** RFC 6901 reference token escaping: "~" → "~0", "/" → "~1". */
export function escapePointerToken(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

function mergeValue(b: Slot, c: Slot, i: Slot, pointer: string, conflicts: string[]): Slot {
  if (deepEqual(c, i)) return c; // same on both sides (incl. both deleted)
  if (deepEqual(b, c)) return i; // only incoming changed
  if (deepEqual(b, i)) return c; // only current changed
  // Both changed differently. Two objects can still merge by key; a missing base
  // (added on both sides) merges against an empty object.
  if (isObject(c) && isObject(i) && (b === MISSING || isObject(b))) {
    return mergeObject(b === MISSING ? {} : b, c, i, pointer, conflicts);
  }
  conflicts.push(pointer);
  return c;
}

function mergeObject(b: JsonObject, c: JsonObject, i: JsonObject, pointer: string, conflicts: string[]): JsonObject {
  const out: JsonObject = {};
  // current's key order first, then keys new from incoming in incoming's order
  const keys = Object.keys(c);
  for (const k of Object.keys(i)) if (!Object.hasOwn(c, k)) keys.push(k);
  for (const k of keys) {
    const v = mergeValue(get(b, k), get(c, k), get(i, k), `${pointer}/${escapePointerToken(k)}`, conflicts);
    if (v !== MISSING) put(out, k, v);
  }
  return out;
}

interface Format { indent: string | null; eol: string; finalNewline: boolean }

/**
 * Detects formatting from the text: indent = leading whitespace of the first
 * indented line ('' = compact, null = nothing to learn from, e.g. "{}").
 */
function detectFormat(text: string, value: Json): Format {
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  const finalNewline = text.endsWith('\n');
  const m = /\n([ \t]+)\S/.exec(text);
  let indent: string | null = m ? m[1] : null;
  if (indent === null && typeof value === 'object' && value !== null && Object.keys(value).length > 0) {
    indent = ''; // has members but no indented line: compact
  }
  return { indent, eol, finalNewline };
}

/**
 * JSON.parse, refusing what it would silently change: a number a double does not hold
 * exactly (12345678901234567890, 1e400, 0.300000000000000044) or a duplicate key (only
 * the last would survive). Re-serializing would rewrite such a value nobody edited.
 */
function parse(text: string): { ok: true; value: Json } | { ok: false } {
  try {
    const value = JSON.parse(text) as Json;
    // Throws on an unsafe number, or on a duplicate key with a different value (an equal
    // one collapses harmlessly); also a RangeError when too deep to parse recursively.
    parseLossless(text, null, { parseNumber: toSafeNumberOrThrow });
    return { ok: true, value };
  } catch {
    return { ok: false };
  }
}

/**
 * Three-way JSON merge. `base` null = the path is new on both sides (add/add).
 * ok:false when any given side is not valid JSON, holds a number or duplicate key
 * JSON.parse would change (see parse), or is nested too deeply to merge without
 * overflowing the stack (caller falls back to text).
 * The result uses current's formatting; when the merged value equals current,
 * current's exact text is returned so an unchanged file stays byte-identical.
 */
export function mergeJson(base: string | null, current: string, incoming: string): JsonMergeResult {
  const b = base === null ? null : parse(base);
  const c = parse(current);
  const i = parse(incoming);
  if ((b && !b.ok) || !c.ok || !i.ok) return { ok: false };

  try {
    const pointers: string[] = [];
    const merged = mergeValue(b ? b.value : MISSING, c.value, i.value, '', pointers) as Json;
    const clean = pointers.length === 0;
    if (deepEqual(merged, c.value)) return { ok: true, clean, result: current, pointers };

    const fmt = detectFormat(current, c.value);
    // Current gave no hint (e.g. it was "{}"): borrow incoming's style, else 2 spaces.
    const indent = fmt.indent ?? detectFormat(incoming, i.value).indent ?? '  ';
    let text = JSON.stringify(merged, null, indent);
    // JSON.stringify escapes newlines inside strings, so every "\n" here is layout.
    if (fmt.eol !== '\n') text = text.replace(/\n/g, fmt.eol);
    if (fmt.finalNewline) text += fmt.eol;
    return { ok: true, clean, result: text, pointers };
  } catch (err) {
    // JSON.parse copes with any nesting depth, our recursion does not: a pathologically
    // deep document is left to the text merge rather than crashing the sync.
    if (err instanceof RangeError) return { ok: false };
    throw err;
  }
}
