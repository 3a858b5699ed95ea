import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DirectorySyncs } from '../../src/storage/blobs/durable.js';
import { LocalBlobStore } from '../../src/storage/blobs/local.js';

/*
 * What the local store has written must survive a power cut before a database row points at
 * it: every file of the store (a blob's own file, a pack, its index) has its contents flushed,
 * and its name is in a flush of its directory, as is the directory's own name. The flushes
 * are observed where the store makes them, through `fs.open`'s handles: a file flush is
 * recorded by inode (a temp file flushed, then renamed, counts), a directory flush with the
 * names the directory held when it started.
 */

const flushedFiles = new Set<number>();
const flushedNames = new Map<string, Set<string>>();
/** Directories whose flushes wait for this promise once started (to hold one flush running). */
const held = new Map<string, Promise<void>>();

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-durability-'));
  const open = fs.open.bind(fs);
  vi.spyOn(fs, 'open').mockImplementation(async (...args: Parameters<typeof fs.open>) => {
    const handle = await open(...args);
    const where = path.resolve(String(args[0]));
    const datasync = handle.datasync.bind(handle);
    const sync = handle.sync.bind(handle);
    handle.datasync = async () => {
      const { ino } = await handle.stat();
      await datasync();
      flushedFiles.add(ino);
    };
    handle.sync = async () => {
      const names = readdirSync(where); // a directory: files are flushed with datasync
      await held.get(where);
      await sync();
      const known = flushedNames.get(where) ?? new Set();
      for (const name of names) known.add(name);
      flushedNames.set(where, known);
    };
    return handle;
  });
});
afterAll(async () => {
  vi.restoreAllMocks();
  await fs.rm(dir, { recursive: true, force: true });
});

/** Every file of the store proper (not staging or temp files): contents and name flushed, and its directory's name. */
async function notDurable(root: string): Promise<string[]> {
  const problems: string[] = [];
  const named = (parent: string, name: string) => flushedNames.get(parent)?.has(name) ?? false;
  for (const sub of await fs.readdir(root)) {
    if (!/^[0-9a-f]{2}$/.test(sub) && sub !== 'packs') continue;
    const subdir = path.join(root, sub);
    if (!named(root, sub)) problems.push(`directory ${sub}/ not in a flush of the store directory`);
    for (const name of await fs.readdir(subdir)) {
      const { ino } = await fs.stat(path.join(subdir, name));
      if (!flushedFiles.has(ino)) problems.push(`${sub}/${name}: contents not flushed`);
      if (!named(subdir, name)) problems.push(`${sub}/${name}: name not flushed`);
    }
  }
  return problems;
}

describe('LocalBlobStore durability', () => {
  const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const blob = (text: string) => ({ bytes: Buffer.from(text), hash: sha256(Buffer.from(text)) });
  const stored = async (root: string) => {
    const out: string[] = [];
    for (const sub of await fs.readdir(root)) if (/^[0-9a-f]{2}$/.test(sub) || sub === 'packs') out.push(...(await fs.readdir(path.join(root, sub))));
    return out;
  };

  it('flushes every file it stores, and its name, before the write returns', async () => {
    const root = path.join(dir, 'store');
    const store = new LocalBlobStore(root, { sign: () => 's', verify: () => true }, () => 'http://127.0.0.1');
    await store.init();
    expect(await notDurable(root)).toEqual([]); // packs/, made at start
    const [a, b, c, d, e] = ['server-made', 'single PUT', 'packed one', 'packed two', 'packed later'].map(blob);

    await store.put(a.hash, a.bytes); // a run's or a merge's file
    expect(await notDurable(root)).toEqual([]);

    await store.receive('upload_1', 0, b.hash, Readable.from([b.bytes]), 1 << 20); // a PUT on its own
    await store.promoteStaged('upload_1', 0, b.hash);
    expect(await notDurable(root)).toEqual([]);

    const first = await store.openPack('upload_2'); // a batch PUT, linked into packs/ whole
    first.add(0, c.hash, c.bytes);
    first.add(1, d.hash, d.bytes);
    await first.finish();
    await store.promoteStaged('upload_2', 0, c.hash);
    expect(await notDurable(root)).toEqual([]);

    const second = await store.openPack('upload_3'); // partly stored already: the rest is copied into a new pack
    second.add(0, a.hash, a.bytes);
    second.add(1, e.hash, e.bytes);
    await second.finish();
    await store.promoteStaged('upload_3', 1, e.hash);
    expect(await notDurable(root)).toEqual([]);

    await store.delete([c.hash]); // takes the first pack apart: d becomes a file of its own
    expect(await store.read(d.hash)).toEqual(d.bytes);
    expect(await notDurable(root)).toEqual([]);
    // Every kind of write above happened, so the checks covered each of them.
    expect(await stored(root)).toEqual(expect.arrayContaining([a.hash, b.hash, d.hash]));
    expect((await stored(root)).filter((n) => n.endsWith('.idx'))).toHaveLength(1);
  });
});

describe('DirectorySyncs', () => {
  it('shares a flush among the calls made while one runs, and never one that started before the call', async () => {
    const syncs = new DirectorySyncs();
    const where = path.join(dir, 'shared');
    await fs.mkdir(where);
    const flushes = () => vi.mocked(fs.open).mock.calls.filter((c) => path.resolve(String(c[0])) === where).length;
    const before = flushes();
    let release!: () => void;
    held.set(where, new Promise<void>((resolve) => (release = resolve)));
    await fs.writeFile(path.join(where, 'first'), '1');
    const running = syncs.sync(where); // started, and held until the calls below are made
    await fs.writeFile(path.join(where, 'second'), '2'); // named after the running flush started
    const waiting = Array.from({ length: 50 }, () => syncs.sync(where));
    release();
    await Promise.all([running, ...waiting]);
    expect(flushes() - before).toBe(2);
    expect([...flushedNames.get(where)!].sort()).toEqual(['first', 'second']);
  });

  it('has nothing to flush in a directory that was taken away (a discarded staging area)', async () => {
    await expect(new DirectorySyncs().sync(path.join(dir, 'discarded'))).resolves.toBeUndefined();
  });
});
