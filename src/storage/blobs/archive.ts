import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32, createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import yauzl from 'yauzl';

/**
 * Reading untrusted archives (state snapshots): zip or tar.gz, from a file on disk.
 * Two passes: the first checks every entry (paths, types, counts, sizes, compression
 * ratio) without keeping anything, the second hands the files to the caller. So a bad
 * archive is rejected before a single file of it is stored.
 */

export class ArchiveError extends Error {}

export interface ArchiveLimits {
  maxFiles: number;
  /** Total uncompressed bytes of the files. */
  maxBytes: number;
  /** Why a path is not acceptable, or null. */
  pathProblem(path: string): string | null;
  /** A fresh check of the names of one archive, given one by one (duplicates, a file that is also a folder). */
  names(): { add(path: string): string | null };
}

export type ArchiveFormat = 'zip' | 'tar.gz';

/** Inflated bytes above this must also stay under MAX_RATIO × the compressed size. */
const BOMB_FLOOR = 16 * 1024 * 1024;
const MAX_RATIO = 200;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

export async function detectFormat(file: string): Promise<ArchiveFormat> {
  const handle = await fs.open(file, 'r');
  try {
    const head = Buffer.alloc(4);
    const { bytesRead } = await handle.read(head, 0, 4, 0);
    if (bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'tar.gz';
    if (bytesRead === 4 && head.readUInt32LE(0) === 0x04034b50) return 'zip';
    if (bytesRead === 4 && head.readUInt32LE(0) === 0x06054b50) return 'zip'; // empty zip
    throw new ArchiveError('the archive is neither a zip nor a tar.gz file');
  } finally {
    await handle.close();
  }
}

export type OnFile = (path: string, size: number, body: Readable) => Promise<void>;

export async function readArchive(file: string, format: ArchiveFormat, limits: ArchiveLimits, onFile: OnFile): Promise<void> {
  if (format === 'zip') {
    await zipPass(file, limits, null);
    await zipPass(file, limits, onFile);
  } else {
    await tarPass(file, limits, null);
    await tarPass(file, limits, onFile);
  }
}

class Tally {
  files = 0;
  bytes = 0;
  private readonly names: { add(path: string): string | null };
  constructor(private readonly limits: ArchiveLimits) {
    this.names = limits.names();
  }

  /** Normalizes `./a` to `a` and applies the bundle's path rules. */
  file(rawPath: string, size: number): string {
    const path = rawPath.replace(/^(\.\/)+/, '');
    const problem = this.limits.pathProblem(path);
    if (problem) throw new ArchiveError(`entry ${JSON.stringify(rawPath)} is not allowed: its path ${problem}`);
    const clash = this.names.add(path);
    if (clash) throw new ArchiveError(`entry ${JSON.stringify(rawPath)} ${clash}`);
    if (++this.files > this.limits.maxFiles) throw new ArchiveError(`the archive holds more than ${this.limits.maxFiles} files`);
    this.bytes += size;
    if (this.bytes > this.limits.maxBytes) throw new ArchiveError(`the archive's files exceed ${this.limits.maxBytes} bytes uncompressed`);
    return path;
  }
}

async function zipPass(file: string, limits: ArchiveLimits, onFile: OnFile | null): Promise<void> {
  let zip: yauzl.ZipFile;
  try {
    // strictFileNames: a name with a backslash is refused, as in an upload; otherwise yauzl
    // would read `a\b` as the folder `a` holding `b`.
    zip = await yauzl.openPromise(file, { lazyEntries: true, validateEntrySizes: true, strictFileNames: true });
  } catch (err) {
    throw new ArchiveError(`the zip cannot be read: ${(err as Error).message}`);
  }
  const tally = new Tally(limits);
  try {
    for await (const entry of zip.eachEntry()) {
      const mode = (entry.externalFileAttributes >>> 16) & S_IFMT;
      const isDir = entry.fileName.endsWith('/') || mode === S_IFDIR;
      if (mode !== 0 && mode !== S_IFREG && !isDir) {
        throw new ArchiveError(`entry ${JSON.stringify(entry.fileName)} is a symbolic link or special file; only regular files are allowed`);
      }
      if (isDir) continue;
      if (entry.uncompressedSize > BOMB_FLOOR && entry.uncompressedSize > MAX_RATIO * Math.max(1, entry.compressedSize)) {
        throw new ArchiveError(`entry ${JSON.stringify(entry.fileName)} has a suspicious compression ratio (a zip bomb?)`);
      }
      const path = tally.file(entry.fileName, entry.uncompressedSize);
      // yauzl checks the inflated bytes against the declared size while streaming; their CRC
      // is checked here (a stored entry's size cannot be checked otherwise: it is whatever the
      // header says, and a lie takes bytes of the next entry or leaves some out).
      if (onFile) {
        const raw = await zip.openReadStreamPromise(entry);
        const checked = crcChecked(entry);
        raw.once('error', (err) => checked.destroy(err)); // pipe does not pass errors on
        await onFile(path, entry.uncompressedSize, raw.pipe(checked));
      }
    }
  } catch (err) {
    if (err instanceof ArchiveError) throw err;
    const backslash = /^invalid characters in fileName: (.*)$/s.exec((err as Error).message);
    if (backslash) throw new ArchiveError(`entry ${JSON.stringify(backslash[1])} is not allowed: its path contains a backslash (use "/")`);
    throw new ArchiveError(`invalid zip: ${(err as Error).message}`);
  } finally {
    zip.close();
  }
}

/** Passes an entry's bytes on, and fails at their end when their CRC-32 is not the one its header declares. */
function crcChecked(entry: yauzl.Entry): Transform {
  let crc = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      crc = crc32(chunk, crc);
      done(null, chunk);
    },
    flush(done) {
      done(crc === entry.crc32 ? null : new ArchiveError(`entry ${JSON.stringify(entry.fileName)} is corrupt: its bytes do not match its CRC-32`));
    },
  });
}

async function tarPass(file: string, limits: ArchiveLimits, onFile: OnFile | null): Promise<void> {
  const compressed = (await fs.stat(file)).size;
  let inflated = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      inflated += chunk.length;
      if (inflated > limits.maxBytes * 2 + 1024 * 1024 || (inflated > BOMB_FLOOR && inflated > MAX_RATIO * compressed)) {
        return done(new ArchiveError('the tar.gz inflates far beyond its size (a gzip bomb?)'));
      }
      done(null, chunk);
    },
  });
  const tally = new Tally(limits);
  const extract = tar.extract();
  const entries = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      // tar-stream entries are streamx streams: consume them by iterating.
      if (h.type === 'directory') {
        for await (const _ of entry);
        continue;
      }
      if (h.type !== 'file' && h.type !== 'contiguous-file') {
        throw new ArchiveError(`entry ${JSON.stringify(h.name)} is a ${h.type}; only regular files are allowed`);
      }
      const path = tally.file(h.name, h.size ?? 0);
      if (onFile) await onFile(path, h.size ?? 0, Readable.from(entry));
      else for await (const _ of entry);
    }
  })();
  const feed = pipeline(createReadStream(file), createGunzip(), meter, extract);
  try {
    await Promise.all([entries, feed]);
  } catch (err) {
    extract.destroy();
    if (err instanceof ArchiveError) throw err;
    throw new ArchiveError(`invalid tar.gz: ${(err as Error).message}`);
  }
}
