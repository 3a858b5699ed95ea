import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HashPool } from '../src/core/hash-pool.js';

// `harnesslayer deploy` hashes a folder on worker threads.

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-hash-pool-'));
});
afterAll(async () => fs.rm(dir, { recursive: true, force: true }));

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('HashPool', () => {
  it('hashes files across threads', async () => {
    // Sizes around the 1 MiB read buffer, and empty.
    const contents = [0, 1, 4095, 4096, 70_000, 1024 * 1024, 3 * 1024 * 1024 + 7].map((n) => randomBytes(n));
    const files = await Promise.all(
      contents.map(async (bytes, i) => {
        const file = path.join(dir, `f-${i}`);
        await fs.writeFile(file, bytes);
        return file;
      }),
    );
    const pool = new HashPool(3);
    try {
      expect(pool.size).toBe(3);
      // Twice over: each thread reuses its buffer from one file to the next.
      for (let round = 0; round < 2; round++) {
        const hashed = await Promise.all(files.map((f) => pool.hash(f)));
        expect(hashed).toEqual(contents.map((c) => ({ hash: sha256(c), size: c.length })));
      }
    } finally {
      await pool.close();
    }
  });

  it('rejects with the reason for a file it cannot read, and goes on with the others', async () => {
    const pool = new HashPool(1);
    const file = path.join(dir, 'present');
    await fs.writeFile(file, 'here');
    try {
      await expect(pool.hash(path.join(dir, 'gone'))).rejects.toThrow(/ENOENT/);
      await expect(pool.hash(dir)).rejects.toThrow(/EISDIR/);
      expect(await pool.hash(file)).toEqual({ hash: sha256(Buffer.from('here')), size: 4 });
    } finally {
      await pool.close();
    }
  });

  it('hashes a range of a file, and says how much of it there was', async () => {
    // Ranges across the 1 MiB read buffer: what the local store checks a batch's files with.
    const bytes = randomBytes(3 * 1024 * 1024);
    const file = path.join(dir, 'ranges');
    await fs.writeFile(file, bytes);
    const pool = new HashPool(2, { unref: true });
    try {
      const ranges = [
        { offset: 0, length: 0 },
        { offset: 5, length: 10 },
        { offset: 1024 * 1024 - 3, length: 1024 * 1024 + 6 },
        { offset: 2 * 1024 * 1024, length: 1024 * 1024 },
      ];
      const hashed = await Promise.all(ranges.map((r) => pool.hash(file, r)));
      expect(hashed).toEqual(ranges.map((r) => ({ hash: sha256(bytes.subarray(r.offset, r.offset + r.length)), size: r.length })));
      // Past the end: what there was.
      expect(await pool.hash(file, { offset: bytes.length - 4, length: 100 })).toEqual({ hash: sha256(bytes.subarray(bytes.length - 4)), size: 4 });
    } finally {
      await pool.close();
    }
  });

  it('refuses work once its threads have stopped', async () => {
    const pool = new HashPool(1);
    await pool.close();
    await expect(pool.hash(path.join(dir, 'present'))).rejects.toThrow(/hashing threads have stopped/);
  });
});
