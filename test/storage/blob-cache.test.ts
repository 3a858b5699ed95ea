import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobCache } from '../../src/storage/blobs/cache.js';

// A worker's disk copies of what it read from S3.

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-blob-cache-'));
});
afterAll(async () => fs.rm(root, { recursive: true, force: true }));

const blob = (size: number) => {
  const bytes = randomBytes(size);
  return { bytes, hash: createHash('sha256').update(bytes).digest('hex') };
};

/** A fetch that counts its calls. */
function source(bytes: Buffer) {
  const f = { calls: 0, fetch: async () => (f.calls++, bytes) };
  return f;
}

async function cache(name: string, maxBytes: number): Promise<BlobCache> {
  const c = new BlobCache(path.join(root, name), maxBytes);
  await c.init();
  return c;
}

describe('BlobCache', () => {
  it('fetches a blob once, then reads its copy', async () => {
    const c = await cache('once', 1024 * 1024);
    const a = blob(1000);
    const s = source(a.bytes);
    expect((await c.read(a.hash, s.fetch)).equals(a.bytes)).toBe(true);
    expect((await c.read(a.hash, s.fetch)).equals(a.bytes)).toBe(true);
    expect(s.calls).toBe(1);
    // A new process finds the copies already on disk, and deletes temp files left long ago.
    const stale = path.join(root, 'once', 'tmp', '999999-0');
    const fresh = path.join(root, 'once', 'tmp', '999999-1');
    await fs.writeFile(stale, 'left by a stopped process');
    await fs.writeFile(fresh, 'being written by another');
    const longAgo = new Date(Date.now() - 2 * 3_600_000);
    await fs.utimes(stale, longAgo, longAgo);
    const again = await cache('once', 1024 * 1024);
    expect(await fs.readdir(path.join(root, 'once', 'tmp'))).toEqual(['999999-1']);
    expect((await again.read(a.hash, s.fetch)).equals(a.bytes)).toBe(true);
    expect(s.calls).toBe(1);
  });

  it('lets the least recently used copies go past its size', async () => {
    const c = await cache('lru', 2500);
    const [a, b, d] = [blob(1000), blob(1000), blob(1000)];
    const sa = source(a.bytes);
    const sb = source(b.bytes);
    await c.read(a.hash, sa.fetch);
    await c.read(b.hash, sb.fetch);
    await c.read(a.hash, sa.fetch); // a is now the most recently used
    await c.read(d.hash, source(d.bytes).fetch); // 3,000 bytes: b goes
    await c.read(a.hash, sa.fetch);
    await c.read(b.hash, sb.fetch);
    expect([sa.calls, sb.calls]).toEqual([1, 2]);
    const kept = (await fs.readdir(path.join(root, 'lru'), { recursive: true })).filter((f) => /[0-9a-f]{64}$/.test(f));
    expect(kept.length).toBe(2);
    // Bigger than the whole cache: read, not kept.
    const big = blob(3000);
    const sbig = source(big.bytes);
    await c.read(big.hash, sbig.fetch);
    await c.read(big.hash, sbig.fetch);
    expect(sbig.calls).toBe(2);
  });

  it('fetches again a copy that was damaged or deleted by another process', async () => {
    const c = await cache('damaged', 1024 * 1024);
    const a = blob(500);
    const s = source(a.bytes);
    await c.read(a.hash, s.fetch);
    const file = path.join(root, 'damaged', a.hash.slice(0, 2), a.hash);
    await fs.writeFile(file, 'not the content');
    expect((await c.read(a.hash, s.fetch)).equals(a.bytes)).toBe(true);
    expect((await fs.readFile(file)).equals(a.bytes)).toBe(true); // the copy was replaced
    await fs.rm(file);
    expect((await c.read(a.hash, s.fetch)).equals(a.bytes)).toBe(true);
    expect(s.calls).toBe(3);
  });
});
