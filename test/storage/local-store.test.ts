import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalBlobStore } from '../../src/storage/blobs/local.js';
import { eventually } from '../helpers/server.js';

// The local blob store's own housekeeping, without a server.

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-local-store-'));
});
afterAll(async () => fs.rm(dir, { recursive: true, force: true }));

const signer = { sign: () => 'sig', verify: () => true };
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const exists = (p: string) => fs.access(p).then(
  () => true,
  () => false,
);

describe('LocalBlobStore', () => {
  it('takes a discarded staging area away at once and deletes its files after', async () => {
    const root = path.join(dir, 'discard');
    const store = new LocalBlobStore(root, signer, () => 'http://127.0.0.1');
    await store.init();
    const files = Array.from({ length: 50 }, (_, i) => Buffer.from(`staged file ${i}\n`));
    for (const [i, bytes] of files.entries()) await store.receiveBytes('upload_a', i, sha256(bytes), bytes);
    expect(await fs.readdir(path.join(root, 'uploads', 'upload_a'))).toHaveLength(50);

    await store.discardStage('upload_a');
    expect(await exists(path.join(root, 'uploads', 'upload_a'))).toBe(false);
    await eventually(async () => (await fs.readdir(path.join(root, 'trash'))).length === 0, 'the trash to be emptied');
    // Discarding what was never staged is a no-op.
    await store.discardStage('upload_never');
  });

  it('empties what a stopped process left in the trash when it starts', async () => {
    const root = path.join(dir, 'restart');
    const left = path.join(root, 'trash', 'stopped-0');
    await fs.mkdir(left, { recursive: true });
    await fs.writeFile(path.join(left, '0'), 'left behind');
    await new LocalBlobStore(root, signer, () => 'http://127.0.0.1').init();
    await eventually(async () => !(await exists(left)), 'the leftover to be deleted');
    expect(await fs.readdir(path.join(root, 'trash'))).toEqual([]);
  });
});
