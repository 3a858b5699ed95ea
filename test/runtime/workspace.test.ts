import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scan, stampOf, type Workspace } from '../../src/runtime/workspace.js';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-workspace-'));
});
afterAll(async () => fs.rm(root, { recursive: true, force: true }));

/** A workspace as materialize leaves it, in a directory of its own: `files` written, each stamped. */
async function materialized(files: Record<string, string>): Promise<Workspace> {
  const cwd = await fs.mkdtemp(path.join(root, 'ws-'));
  const ws: Workspace = { cwd, start: new Map(), stamps: new Map(), headStateId: null, headSeq: 0 };
  for (const [name, body] of Object.entries(files)) {
    await fs.writeFile(path.join(cwd, name), body);
    ws.start.set(name, { path: name, hash: sha(body), size: body.length });
    ws.stamps.set(name, stampOf(await fs.stat(path.join(cwd, name))));
  }
  return ws;
}

describe('scan', () => {
  it('sees a file moved over another of the same size and modification time (mv, cp -p, tar x keep times)', async () => {
    const ws = await materialized({ 'draft.txt': 'alpha\n', 'final.txt': 'bravo\n', 'keep.txt': 'keep\n' });
    const { mtime } = await fs.stat(path.join(ws.cwd, 'final.txt'));
    await fs.utimes(path.join(ws.cwd, 'draft.txt'), mtime, mtime);
    await fs.rename(path.join(ws.cwd, 'draft.txt'), path.join(ws.cwd, 'final.txt'));
    const after = await scan(ws, 1 << 20);
    expect([...after.keys()].sort()).toEqual(['final.txt', 'keep.txt']);
    expect(after.get('final.txt')).toMatchObject({ hash: sha('alpha\n'), size: 6 });
    // An untouched file is taken as it was, without reading it.
    expect(after.get('keep.txt')).toEqual({ path: 'keep.txt', hash: sha('keep\n'), size: 5 });
  });

  it('leaves out a file whose name is not UTF-8 (no bundle can hold it) and saves the others', async () => {
    const ws = await materialized({ 'plain.txt': 'plain\n' });
    const latin1 = Buffer.concat([Buffer.from(`${ws.cwd}/caf`), Buffer.from([0xe9]), Buffer.from('.txt')]);
    await fs.writeFile(latin1, 'accent\n');
    await fs.writeFile(path.join(ws.cwd, 'new.txt'), 'new\n');
    const after = await scan(ws, 1 << 20);
    expect([...after.keys()].sort()).toEqual(['new.txt', 'plain.txt']);
  });
});
