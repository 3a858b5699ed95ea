import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scan, stampOf, type Workspace } from '../../src/runtime/workspace.js';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
let cwd: string;
beforeAll(async () => {
  cwd = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-workspace-'));
});
afterAll(async () => fs.rm(cwd, { recursive: true, force: true }));

/** A workspace as materialize leaves it: `files` written, each stamped. */
async function materialized(files: Record<string, string>): Promise<Workspace> {
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
    const { mtime } = await fs.stat(path.join(cwd, 'final.txt'));
    await fs.utimes(path.join(cwd, 'draft.txt'), mtime, mtime);
    await fs.rename(path.join(cwd, 'draft.txt'), path.join(cwd, 'final.txt'));
    const after = await scan(ws, 1 << 20);
    expect([...after.keys()].sort()).toEqual(['final.txt', 'keep.txt']);
    expect(after.get('final.txt')).toMatchObject({ hash: sha('alpha\n'), size: 6 });
    // An untouched file is taken as it was, without reading it.
    expect(after.get('keep.txt')).toEqual({ path: 'keep.txt', hash: sha('keep\n'), size: 5 });
  });
});
