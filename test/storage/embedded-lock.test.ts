import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/storage/db.js';

/*
 * The embedded database serves one process: `<dir>.lock` names the process that has it open.
 * (test/cli.test.ts shows a second `user create` or `serve` refused while one serves.)
 */
let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-lock-'));
});
afterAll(async () => fs.rm(root, { recursive: true, force: true }));

/** A node process that stays alive until killed, and its pid. */
async function liveProcess() {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await once(child, 'spawn');
  return child;
}

describe('the embedded database lock', () => {
  it('is held while open, released on close, and refuses another live process', async () => {
    const dir = path.join(root, 'held');
    const db = await openDatabase({ dataDir: dir });
    expect(await fs.readFile(`${dir}.lock`, 'utf8')).toBe(String(process.pid));
    await db.close();
    await expect(fs.access(`${dir}.lock`)).rejects.toThrow();

    const other = await liveProcess();
    try {
      await fs.writeFile(`${dir}.lock`, String(other.pid));
      await expect(openDatabase({ dataDir: dir })).rejects.toThrow(`is in use by process ${other.pid}`);
      expect(await fs.readFile(`${dir}.lock`, 'utf8')).toBe(String(other.pid)); // left as it was
    } finally {
      other.kill();
      await once(other, 'exit');
    }
  });

  it('takes over a lock left by a process that is gone, or by an earlier run with this pid (a restarted container)', async () => {
    const dead = await liveProcess();
    dead.kill();
    await once(dead, 'exit');
    for (const [name, pid] of [['dead', dead.pid!], ['same-pid', process.pid]] as const) {
      const dir = path.join(root, name);
      await fs.writeFile(`${dir}.lock`, String(pid));
      const db = await openDatabase({ dataDir: dir });
      expect(await fs.readFile(`${dir}.lock`, 'utf8')).toBe(String(process.pid));
      await db.close();
    }
  });
});
