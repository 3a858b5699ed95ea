import { createHash } from 'node:crypto';
import { closeSync, fdatasync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
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

/**
 * Writes one staged pack: blobs are appended as they arrive and checked against their
 * declared hash (a mismatching one is cut off again and recorded nowhere; a second copy of
 * content the pack holds is cut off too, and its entry points at the first). `finish` writes
 * the index, which is what makes the blobs count; a pack that received nothing is removed.
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
  private readonly entries: PackEntry[] = [];
  /** Content already in this pack: a second file with the same bytes points at the first. */
  private readonly written = new Map<string, { offset: number; size: number }>();
  private closed = false;

  private constructor(
    readonly file: string,
    private readonly fd: number,
    /** Writes the index next to the pack (atomically). */
    private readonly writeIndex: (json: string) => Promise<void>,
  ) {}

  static open(file: string, writeIndex: (json: string) => Promise<void>): PackWriter {
    return new PackWriter(file, openSync(file, 'wx'), writeIndex);
  }

  /** Appends a file held in memory. */
  add(index: number, hash: string, bytes: Buffer): void {
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== hash) throw new HashMismatchError(hash, actual);
    const known = this.written.get(hash);
    if (known) {
      this.entries.push({ index, hash, ...known });
      return;
    }
    this.writeAt(bytes, this.offset);
    this.record(index, hash, bytes.length);
  }

  /** Appends a streamed file, hashing it on the way; on a mismatch or overflow nothing is kept. */
  async addStream(index: number, hash: string, body: AsyncIterable<Buffer> | Iterable<Buffer>, limit: number): Promise<number> {
    const hasher = createHash('sha256');
    let size = 0;
    try {
      for await (const chunk of body) {
        if (size + chunk.length > limit) throw new TooLargeError(`the body exceeds ${limit} bytes`);
        hasher.update(chunk);
        this.writeAt(chunk, this.offset + size);
        size += chunk.length;
      }
      const actual = hasher.digest('hex');
      if (actual !== hash) throw new HashMismatchError(hash, actual);
    } catch (err) {
      ftruncateSync(this.fd, this.offset);
      throw err;
    }
    const known = this.written.get(hash);
    if (known) {
      ftruncateSync(this.fd, this.offset);
      this.entries.push({ index, hash, ...known });
    } else {
      this.record(index, hash, size);
    }
    return size;
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

  private record(index: number, hash: string, size: number): void {
    const at = { offset: this.offset, size };
    this.written.set(hash, at);
    this.entries.push({ index, hash, ...at });
    this.offset += size;
  }

  /** Flushes and closes the pack, then writes its index (or removes the pack when it holds nothing). */
  async finish(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flushing; // the descriptor stays open until it is done
    closeSync(this.fd);
    if (this.flushError) throw this.flushError;
    if (this.entries.length === 0) {
      await fs.rm(this.file, { force: true });
      return;
    }
    await syncFile(this.file);
    await this.writeIndex(packIndexJson(this.entries));
  }
}
