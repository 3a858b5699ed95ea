import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HashPool } from '../src/sdk/hash-pool.js';

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

  it('refuses work once its threads have stopped', async () => {
    const pool = new HashPool(1);
    await pool.close();
    await expect(pool.hash(path.join(dir, 'present'))).rejects.toThrow(/hashing threads have stopped/);
  });
});
