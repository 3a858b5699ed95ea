import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HashMismatchError, TooLargeError } from '../../src/storage/blobs/driver.js';
import { LocalBlobStore } from '../../src/storage/blobs/local.js';
import { eventually } from '../helpers/server.js';

// The local blob store's own housekeeping, without a server.

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-local-store-'));
});
afterAll(async () => fs.rm(dir, { recursive: true, force: true }));

const signer = { sign: () => 'sig', verify: () => true };
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
    for (const [i, bytes] of files.entries()) await store.putStaged('upload_a', i, bytes);
    expect(await fs.readdir(path.join(root, 'uploads', 'upload_a'))).toHaveLength(50);

    await store.discardStage('upload_a');
    expect(await exists(path.join(root, 'uploads', 'upload_a'))).toBe(false);
    await eventually(async () => (await fs.readdir(path.join(root, 'trash'))).length === 0, 'the trash to be emptied');
    // Discarding what was never staged is a no-op.
    await store.discardStage('upload_never');
  });

  it('empties what a stopped process left in the trash, and its old temp files, when it starts', async () => {
    const root = path.join(dir, 'restart');
    const left = path.join(root, 'trash', 'stopped-0');
    await fs.mkdir(left, { recursive: true });
    await fs.writeFile(path.join(left, '0'), 'left behind');
    // Temp files: one a stopped process left (untouched for two hours), one another live
    // process is writing now.
    await fs.mkdir(path.join(root, 'tmp'), { recursive: true });
    await fs.writeFile(path.join(root, 'tmp', 'stopped-1'), 'half a blob');
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await fs.utimes(path.join(root, 'tmp', 'stopped-1'), twoHoursAgo, twoHoursAgo);
    await fs.writeFile(path.join(root, 'tmp', 'live-1'), 'being written');
    await new LocalBlobStore(root, signer, () => 'http://127.0.0.1').init();
    await eventually(async () => !(await exists(left)), 'the leftover to be deleted');
    expect(await fs.readdir(path.join(root, 'trash'))).toEqual([]);
    expect(await fs.readdir(path.join(root, 'tmp'))).toEqual(['live-1']);
  });
});

describe('LocalBlobStore packs', () => {
  const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const blob = (text: string) => ({ bytes: Buffer.from(text), hash: sha256(Buffer.from(text)) });
  const newStore = async (name: string) => {
    const store = new LocalBlobStore(path.join(dir, name), signer, () => 'http://127.0.0.1');
    await store.init();
    return store;
  };
  const packFiles = (root: string) => fs.readdir(path.join(root, 'packs')).then((names) => names.sort());
  const readAll = async (stream: AsyncIterable<unknown>) => {
    const parts: Buffer[] = [];
    for await (const chunk of stream) parts.push(chunk as Buffer);
    return Buffer.concat(parts);
  };

  it('stages a batch as one pack, links it into the store whole, and reads every file back', async () => {
    const store = await newStore('pack-flow');
    const [a, b, empty] = [blob('alpha'), blob('bravo'), blob('')];
    const big = Buffer.alloc(3 * 1024 * 1024, 7);
    const pack = await store.openPack('upload_p');
    pack.add(0, a.hash, a.bytes);
    pack.add(1, b.hash, b.bytes);
    pack.add(2, a.hash, a.bytes); // the same content again: stored once, found under both indexes
    pack.add(3, empty.hash, empty.bytes);
    expect(await pack.addStream(4, sha256(big), [big.subarray(0, 1000), big.subarray(1000)], 1 << 30)).toBe(big.length);
    expect(await pack.addStream(5, b.hash, [b.bytes], 1 << 30)).toBe(5); // streamed again: cut off, pointed at the first
    expect(await store.verifyStaged('upload_p', 0, a.hash, 64)).toEqual({ status: 'missing' }); // nothing counts before finish
    await pack.finish();
    expect((await fs.stat(pack.file)).size).toBe(5 + 5 + big.length);

    expect(await store.verifyStaged('upload_p', 2, a.hash, 64)).toEqual({ status: 'ok', size: 5, bytes: a.bytes });
    expect(await store.verifyStaged('upload_p', 5, b.hash, 64)).toEqual({ status: 'ok', size: 5, bytes: b.bytes });
    expect(await store.verifyStaged('upload_p', 4, sha256(big), 64)).toEqual({ status: 'ok', size: big.length });
    expect(await store.verifyStaged('upload_p', 6, a.hash, 64)).toEqual({ status: 'missing' });
    expect(await readAll((await store.readStaged('upload_p', 1))!)).toEqual(b.bytes);

    for (const [index, hash] of [a.hash, b.hash, a.hash, empty.hash, sha256(big)].entries()) await store.promoteStaged('upload_p', index, hash);
    const files = await packFiles(path.join(dir, 'pack-flow'));
    expect(files).toHaveLength(2); // one pack and its index, for five files
    expect(files[1]).toBe(`${files[0]}.idx`);
    expect(await store.read(b.hash)).toEqual(b.bytes);
    expect((await readAll(await store.get(sha256(big)))).equals(big)).toBe(true);
    expect(await readAll(await store.get(empty.hash))).toEqual(Buffer.alloc(0));
    expect(await store.has(a.hash)).toBe(true);
    expect(await store.has(sha256(Buffer.from('never')))).toBe(false);
    expect(await store.list()).toEqual(new Map([[a.hash, 5], [b.hash, 5], [empty.hash, 0], [sha256(big), big.length]]));
    // Server-made content the pack already holds is not written again.
    await store.put(b.hash, b.bytes);
    expect(await exists(path.join(dir, 'pack-flow', b.hash.slice(0, 2), b.hash))).toBe(false);
    // The staged pack stays for a retried complete, which adds nothing.
    await store.promoteStaged('upload_p', 0, a.hash);
    expect(await packFiles(path.join(dir, 'pack-flow'))).toEqual(files);
  });

  it('keeps nothing of a file whose bytes do not match, before or after the files around it', async () => {
    const store = await newStore('pack-mismatch');
    const [a, c] = [blob('first'), blob('third')];
    const pack = await store.openPack('upload_m');
    pack.add(0, a.hash, a.bytes);
    await expect(pack.addStream(1, sha256(Buffer.from('declared')), [Buffer.from('other '), Buffer.from('bytes')], 1 << 30)).rejects.toThrow(HashMismatchError);
    expect(() => pack.add(2, sha256(Buffer.from('declared')), Buffer.from('wrong'))).toThrow(HashMismatchError);
    await expect(pack.addStream(3, c.hash, [Buffer.alloc(2048)], 1024)).rejects.toThrow(TooLargeError);
    pack.add(4, c.hash, c.bytes);
    await pack.finish();
    expect(await fs.readFile(pack.file, 'utf8')).toBe('firstthird');
    for (const index of [1, 2, 3]) expect(await store.verifyStaged('upload_m', index, a.hash, 64)).toEqual({ status: 'missing' });
    expect(await store.verifyStaged('upload_m', 4, c.hash, 64)).toEqual({ status: 'ok', size: 5, bytes: c.bytes });
    // A pack that received nothing leaves nothing behind.
    const none = await store.openPack('upload_m');
    await none.finish();
    expect(await exists(none.file)).toBe(false);
  });

  it('copies only the contents the store lacks when it promotes a pack', async () => {
    const root = path.join(dir, 'pack-dedupe');
    const store = await newStore('pack-dedupe');
    const [a, b, c] = [blob('kept as a file'), blob('in the first pack'), blob('new')];
    await store.put(a.hash, a.bytes);
    const first = await store.openPack('upload_1');
    first.add(0, b.hash, b.bytes);
    await first.finish();
    await store.promoteStaged('upload_1', 0, b.hash);
    const second = await store.openPack('upload_2');
    for (const [i, x] of [a, b, c].entries()) second.add(i, x.hash, x.bytes);
    await second.finish();
    for (const [i, x] of [a, b, c].entries()) await store.promoteStaged('upload_2', i, x.hash);
    const packs = (await packFiles(root)).filter((f) => !f.endsWith('.idx'));
    expect(packs).toHaveLength(2);
    const sizes = await Promise.all(packs.map(async (f) => (await fs.stat(path.join(root, 'packs', f))).size));
    expect(sizes.sort((x, y) => x - y)).toEqual([c.bytes.length, b.bytes.length].sort((x, y) => x - y));
    expect(await store.list()).toEqual(new Map([a, b, c].map((x) => [x.hash, x.bytes.length])));
    expect(await store.read(c.hash)).toEqual(c.bytes);
  });

  it('takes a pack apart when one of its blobs is deleted, and another process still finds the rest', async () => {
    const root = path.join(dir, 'pack-delete');
    const one = await newStore('pack-delete');
    const other = await newStore('pack-delete'); // a second process on the same directory
    const [a, b, c] = [blob('a stays'), blob('b goes'), blob('c stays')];
    const pack = await one.openPack('upload_d');
    for (const [i, x] of [a, b, c].entries()) pack.add(i, x.hash, x.bytes);
    await pack.finish();
    for (const [i, x] of [a, b, c].entries()) await one.promoteStaged('upload_d', i, x.hash);
    expect(await other.read(a.hash)).toEqual(a.bytes); // learns of the pack when it misses

    await one.delete([b.hash]);
    expect(await packFiles(root)).toEqual([]);
    expect(await exists(path.join(root, a.hash.slice(0, 2), a.hash))).toBe(true);
    expect(await exists(path.join(root, c.hash.slice(0, 2), c.hash))).toBe(true);
    // The other process still points at the pack: it falls back to the files.
    expect(await other.read(c.hash)).toEqual(c.bytes);
    expect(await readAll(await other.get(a.hash))).toEqual(a.bytes);
    expect(await other.has(b.hash)).toBe(false);
    await expect(other.read(b.hash)).rejects.toThrow(/ENOENT/);
    expect(await other.list()).toEqual(new Map([a, c].map((x) => [x.hash, x.bytes.length])));

    await other.delete([a.hash, c.hash]);
    expect(await one.list()).toEqual(new Map());
  });
});
