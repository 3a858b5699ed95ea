import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { removeStaleTemp } from './leftovers.js';

/**
 * A worker's copies of blobs it read from S3, by content address under `dir`. Every turn
 * writes its workspace from scratch, and a file read from the bucket is a round trip. A copy
 * is never stale (content never changes under its hash) and is checked against its hash when
 * read. The least recently used copies go once the total passes `maxBytes`. Processes may share
 * the directory: a copy that another one deleted is simply fetched again.
 */
export class BlobCache {
  /** hash → size, least recently used first (a Map keeps insertion order). */
  private readonly entries = new Map<string, number>();
  private total = 0;
  private count = 0;

  constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {}

  /**
   * Makes the directory and takes in the copies already there, oldest first. Temp files an
   * hour old were left by a process that stopped while writing (a copy takes far less).
   */
  async init(): Promise<void> {
    const tmp = path.join(this.dir, 'tmp');
    await fs.mkdir(tmp, { recursive: true });
    await removeStaleTemp(tmp);
    const found: { hash: string; size: number; at: number }[] = [];
    for (const sub of await fs.readdir(this.dir)) {
      if (!/^[0-9a-f]{2}$/.test(sub)) continue;
      for (const hash of await fs.readdir(path.join(this.dir, sub))) {
        const st = await fs.stat(path.join(this.dir, sub, hash)).catch(() => undefined);
        if (st?.isFile()) found.push({ hash, size: st.size, at: st.mtimeMs });
      }
    }
    for (const f of found.sort((a, b) => a.at - b.at)) this.remember(f.hash, f.size);
    await this.evict();
  }

  /** The blob's bytes: the local copy, else `fetch()`'s, kept for next time. */
  async read(hash: string, fetch: () => Promise<Buffer>): Promise<Buffer> {
    if (this.entries.has(hash)) {
      const bytes = await fs.readFile(this.file(hash)).catch(() => undefined);
      if (bytes && createHash('sha256').update(bytes).digest('hex') === hash) {
        this.remember(hash, bytes.length); // now the most recently used
        return bytes;
      }
      await this.drop(hash); // deleted by another process, or damaged
    }
    const bytes = await fetch();
    if (bytes.length <= this.maxBytes) await this.keep(hash, bytes).catch(() => undefined); // a copy is only a copy
    return bytes;
  }

  private file(hash: string): string {
    return path.join(this.dir, hash.slice(0, 2), hash);
  }

  private remember(hash: string, size: number): void {
    this.total -= this.entries.get(hash) ?? 0;
    this.entries.delete(hash);
    this.entries.set(hash, size);
    this.total += size;
  }

  private async keep(hash: string, bytes: Buffer): Promise<void> {
    const tmp = path.join(this.dir, 'tmp', `${process.pid}-${this.count++}`);
    try {
      await fs.writeFile(tmp, bytes);
      await fs.mkdir(path.dirname(this.file(hash)), { recursive: true });
      await fs.rename(tmp, this.file(hash));
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    this.remember(hash, bytes.length);
    await this.evict();
  }

  private async evict(): Promise<void> {
    for (const [hash] of this.entries) {
      if (this.total <= this.maxBytes) return;
      await this.drop(hash);
    }
  }

  private async drop(hash: string): Promise<void> {
    this.total -= this.entries.get(hash) ?? 0;
    this.entries.delete(hash);
    await fs.rm(this.file(hash), { force: true });
  }
}
