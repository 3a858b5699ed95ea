import { createHash } from 'node:crypto';
import { closeSync, fdatasync, ftruncateSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import fs from 'node:fs/promises';
import { Readable } from 'node:stream';
import { HashMismatchError, TooLargeError } from './driver.js';
import { syncFile } from './durable.js';

/**
 * Pack files of the local blob store: many blobs in one file. A batch PUT (a tar of many
 * upload files) is staged as one pack instead of one file per upload file, and `complete`
 * links the whole pack into the store: creating a thousand small files costs this disk as
 * much as copying them (docs/PERFORMANCE.md, "Upload"), one pack costs one.
 *
 * A pack is two files: `<name>` (the bytes, one blob after another) and `<name>.idx` (JSON,
 * `[[index, hash, offset, size], ...]`; `index` is the upload file's index). The index is
 * written after the bytes are flushed to the disk and renamed into place, so a pack whose index
 * can be read is whole, also after a crash.
 * Packs never change: when a blob in a pack is deleted, the pack's other blobs become
 * files of their own and the pack goes (LocalBlobStore.delete).
 */

export interface PackEntry {
  index: number;
  hash: string;
  offset: number;
  size: number;
}

/** Where a blob lives inside a pack (`pack` is the bytes file's path). */
export interface PackedBlob {
  pack: string;
  offset: number;
  size: number;
}

export const PACK_PREFIX = 'pack-';
export const INDEX_SUFFIX = '.idx';

export async function readPackIndex(file: string): Promise<PackEntry[]> {
  const rows = JSON.parse(await fs.readFile(file, 'utf8')) as [number, string, number, number][];
  return rows.map(([index, hash, offset, size]) => ({ index, hash, offset, size }));
}

export function packIndexJson(entries: PackEntry[]): string {
  return JSON.stringify(entries.map((e) => [e.index, e.hash, e.offset, e.size]));
}

/** Opens a pack for reading; null when it is gone (taken apart meanwhile). */
async function openForReading(pack: string): Promise<fs.FileHandle | null> {
  return fs.open(pack, 'r').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
}

/** The bytes of one packed blob; null when the pack is gone. */
export async function readPacked(blob: PackedBlob): Promise<Buffer | null> {
  const handle = await openForReading(blob.pack);
  if (!handle) return null;
  try {
    const bytes = Buffer.allocUnsafe(blob.size);
    let done = 0;
    while (done < blob.size) {
      const { bytesRead } = await handle.read(bytes, done, blob.size - done, blob.offset + done);
      if (bytesRead === 0) throw packEnded(blob);
      done += bytesRead;
    }
    return bytes;
  } finally {
    await handle.close();
  }
}

/**
 * readPacked, synchronously: for a small blob of a pack just written, so in the page cache,
 * where a read holds the event loop for microseconds and three thread-pool round trips (open,
 * read, close) cost tens of them each. `complete` reads a batch's small files this way
 * (docs/PERFORMANCE.md, "Upload"); a pack that may be cold on the disk is read with readPacked.
 */
export function readPackedSync(blob: PackedBlob): Buffer | null {
  let fd: number;
  try {
    fd = openSync(blob.pack, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const bytes = Buffer.allocUnsafe(blob.size);
    for (let done = 0; done < blob.size; ) {
      const n = readSync(fd, bytes, done, blob.size - done, blob.offset + done);
      if (n === 0) throw packEnded(blob);
      done += n;
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}

function packEnded(blob: PackedBlob): Error {
  return new Error(`pack ${blob.pack} ends before its blob at ${blob.offset}+${blob.size}`);
}

/** A packed blob as a stream; null when the pack is gone. */
export async function streamPacked(blob: PackedBlob): Promise<Readable | null> {
  const handle = await openForReading(blob.pack);
  if (!handle) return null;
  if (blob.size === 0) {
    await handle.close();
    return Readable.from([]);
  }
  return handle.createReadStream({ start: blob.offset, end: blob.offset + blob.size - 1 });
}

/** Bytes a pack takes in before it starts flushing them in the background (see PackWriter). */
const FLUSH_EVERY = 4 * 1024 * 1024;

/** The sha256 (hex) of `length` bytes of a file from `offset`, and how many there were: HashPool.hash. */
export type RangeHasher = (file: string, range: { offset: number; length: number }) => Promise<{ hash: string; size: number }>;

/** What a pack wrote for one file; `actual` is the written bytes' hash, once known. */
interface Written extends PackEntry {
  actual: Promise<string>;
}

/** A file whose bytes did not match its declared hash: stored nowhere. */
export interface PackMismatch {
  index: number;
  hash: string;
  actual: string;
}

/**
 * Writes one staged pack. Files are appended as they arrive; `finish` checks each against its
 * declared hash and writes the index of those that match, which is what makes them count (a
 * pack that keeps nothing is removed).
 *
 * A streamed file is hashed after it is written, on another thread (`hashRange`, reading it
 * back from the page cache): the event loop only parses and writes, and a batch's hashing
 * runs beside its streaming on the second core (docs/PERFORMANCE.md, "Upload"). What does not
 * match is cut out again before the index is written: `finish` rewrites the pack without it
 * (or truncates it when it is the tail), so a mismatching file leaves no byte behind. So does
 * a second copy of content the pack holds: its entry points at the first.
 *
 * Writes are synchronous: a batch's chunks arrive one after another, a write of one holds the
 * event loop for microseconds, and queueing them on the thread pool measured slower
 * (docs/PERFORMANCE.md, "Upload").
 */
export class PackWriter {
  private offset = 0;
  /**
   * A pack flushes what it holds every FLUSH_EVERY bytes, on the thread pool while it goes on
   * taking bytes in, so the disk writes a batch while it streams and `finish` waits for its
   * tail only, not for all of it.
   */
  private unflushed = 0;
  private flushing: Promise<void> | null = null;
  /** What a background flush failed with: a later flush on another descriptor may not report it again. */
  private flushError: Error | null = null;
  private readonly written: Written[] = [];
  /** Content `add` wrote (checked as it came): a second file with the same bytes points at the first. */
  private readonly added = new Map<string, { offset: number; size: number }>();
  private closed = false;

  private constructor(
    readonly file: string,
    private readonly fd: number,
    /** Writes the index next to the pack (atomically). */
    private readonly writeIndex: (json: string) => Promise<void>,
    private readonly hashRange: RangeHasher,
  ) {}

  static open(file: string, writeIndex: (json: string) => Promise<void>, hashRange: RangeHasher): PackWriter {
    return new PackWriter(file, openSync(file, 'wx+'), writeIndex, hashRange); // read too: finish may cut a file out
  }

  /** Appends a file held in memory, checked here: a mismatch throws and writes nothing. */
  add(index: number, hash: string, bytes: Buffer): void {
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== hash) throw new HashMismatchError(hash, actual);
    const known = this.added.get(hash);
    if (known) {
      this.written.push({ index, hash, ...known, actual: Promise.resolve(actual) });
      return;
    }
    this.writeAt(bytes, this.offset);
    this.added.set(hash, { offset: this.offset, size: bytes.length });
    this.append(index, hash, bytes.length, Promise.resolve(actual));
  }

  /**
   * Appends a streamed file; `finish` checks its hash. On a failed stream or an overflow
   * nothing of it is kept.
   */
  async addStream(index: number, hash: string, body: AsyncIterable<Buffer> | Iterable<Buffer>, limit: number): Promise<number> {
    let size = 0;
    try {
      for await (const chunk of body) {
        if (size + chunk.length > limit) throw new TooLargeError(`the body exceeds ${limit} bytes`);
        this.writeAt(chunk, this.offset + size);
        size += chunk.length;
      }
    } catch (err) {
      ftruncateSync(this.fd, this.offset);
      throw err;
    }
    const range = { offset: this.offset, length: size };
    const actual = this.hashRange(this.file, range).then((r) => {
      if (r.size !== size) throw new Error(`pack ${this.file} holds ${r.size} of the ${size} bytes written at ${range.offset}`);
      return r.hash;
    });
    actual.catch(() => undefined); // awaited by finish; not unhandled meanwhile
    this.append(index, hash, size, actual);
    return size;
  }

  private append(index: number, hash: string, size: number, actual: Promise<string>): void {
    this.written.push({ index, hash, offset: this.offset, size, actual });
    this.offset += size;
  }

  private writeAt(bytes: Buffer, position: number): void {
    let done = 0;
    while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done, position + done);
    this.unflushed += bytes.length;
    if (this.unflushed >= FLUSH_EVERY && !this.flushing) {
      this.unflushed = 0;
      this.flushing = new Promise<void>((resolve) =>
        fdatasync(this.fd, (err) => {
          this.flushError ??= err;
          this.flushing = null;
          resolve();
        }),
      );
    }
  }

  /**
   * Checks every file against its declared hash, cuts out what does not match (and second
   * copies), flushes and closes the pack, then writes its index (or removes the pack when it
   * keeps nothing). Returns the files that did not match.
   */
  async finish(): Promise<PackMismatch[]> {
    if (this.closed) return [];
    this.closed = true;
    let entries: PackEntry[];
    const mismatched: PackMismatch[] = [];
    try {
      const checked = await Promise.all(this.written.map(async (w) => ({ ...w, actual: await w.actual })));
      // What stays: matching files, each content once, in the order written.
      const kept = new Map<string, { offset: number; size: number }>();
      entries = [];
      for (const w of checked) {
        if (w.actual !== w.hash) {
          mismatched.push({ index: w.index, hash: w.hash, actual: w.actual });
          continue;
        }
        const first = kept.get(w.hash);
        if (!first) kept.set(w.hash, { offset: w.offset, size: w.size });
        entries.push({ index: w.index, hash: w.hash, ...(first ?? w) });
      }
      await this.flushing; // the descriptor stays open until it is done
      entries = this.cutOut(entries, [...kept.values()]);
    } finally {
      closeSync(this.fd);
    }
    if (this.flushError) throw this.flushError;
    if (entries.length === 0) {
      await fs.rm(this.file, { force: true });
      return mismatched;
    }
    await syncFile(this.file);
    await this.writeIndex(packIndexJson(entries));
    return mismatched;
  }

  /**
   * Leaves the pack holding `ranges` (the kept contents, in the order written) and nothing
   * else: truncated when what goes is its tail, rewritten when it lies between. Returns the
   * entries with their offsets in the pack as it now is.
   */
  private cutOut(entries: PackEntry[], ranges: { offset: number; size: number }[]): PackEntry[] {
    const moved = new Map<number, number>(); // old offset -> new
    let end = 0;
    for (const r of ranges) {
      moved.set(r.offset, end);
      end += r.size;
    }
    if (ranges.every((r) => moved.get(r.offset) === r.offset)) {
      if (end < this.offset) ftruncateSync(this.fd, end);
      return entries;
    }
    const tmp = `${this.file}.cut`;
    const out = openSync(tmp, 'w');
    try {
      const buffer = Buffer.allocUnsafe(Math.min(1024 * 1024, ranges.reduce((max, r) => Math.max(max, r.size), 1)));
      for (const r of ranges) {
        for (let done = 0; done < r.size; ) {
          const n = readSync(this.fd, buffer, 0, Math.min(buffer.length, r.size - done), r.offset + done);
          if (n === 0) throw new Error(`pack ${this.file} ends before ${r.offset + r.size}`);
          for (let w = 0; w < n; ) w += writeSync(out, buffer, w, n - w, moved.get(r.offset)! + done + w);
          done += n;
        }
      }
    } catch (err) {
      closeSync(out);
      rmSync(tmp, { force: true });
      throw err;
    }
    closeSync(out);
    renameSync(tmp, this.file); // flushed with the rest by finish (syncFile), before the index names it
    return entries.map((e) => ({ ...e, offset: moved.get(e.offset)! }));
  }
}
