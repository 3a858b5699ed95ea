import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { rebaseOnto, type WrittenFile } from '../../src/core/rebase.js';
import { BundleNames } from '../../src/core/trees.js';

const f = (p: string, text: string): WrittenFile => {
  const bytes = Buffer.from(text);
  return { path: p, hash: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, bytes };
};
const map = (...files: WrittenFile[]) => new Map(files.map((x) => [x.path, x]));
/** Every file's content is in memory here: no store or database is read. */
const rebase = (start: Map<string, WrittenFile>, mine: Map<string, WrittenFile>, current: Map<string, WrittenFile>) =>
  rebaseOnto({ blobs: undefined as never }, undefined as never, start, mine, current);
const texts = (m: Map<string, WrittenFile>) => Object.fromEntries([...m.values()].map((x) => [x.path, x.bytes!.toString()]));
/** What a disk could not hold: a path that is both a file and a folder. */
const clashes = (m: Map<string, WrittenFile>) => {
  const names = new BundleNames();
  return [...m.keys()].sort().flatMap((p) => names.add(p) ?? []);
};

describe('rebaseOnto: a file where the head has a folder, or the other way round', () => {
  it('the writer adds `out` while the head gained `out/report.md`: the head keeps its folder', async () => {
    const result = await rebase(map(f('a', '1\n')), map(f('a', '1\n'), f('out', 'file\n'), f('b', 'kept\n')), map(f('a', '1\n'), f('out/report.md', 'report\n')));
    expect(clashes(result)).toEqual([]);
    expect(texts(result)).toEqual({ a: '1\n', b: 'kept\n', 'out/report.md': 'report\n' });
  });

  it('the writer turned file `notes` into a folder while the head edited it: the head keeps its file', async () => {
    const result = await rebase(map(f('notes', 'v1\n')), map(f('notes/a.md', 'hello\n')), map(f('notes', 'v2\n')));
    expect(clashes(result)).toEqual([]);
    expect(texts(result)).toEqual({ notes: 'v2\n' });
  });

  it('the writer turned folder `out` into a file while the head edited `out/a`: the head keeps its folder', async () => {
    const result = await rebase(map(f('out/a', 'v1\n')), map(f('out', 'a file now\n')), map(f('out/a', 'v2\n')));
    expect(clashes(result)).toEqual([]);
    expect(texts(result)).toEqual({ 'out/a': 'v2\n' });
  });
});
