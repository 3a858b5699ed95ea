import fs from 'node:fs/promises';
import path from 'node:path';

/** A temp file this old was left by a process that stopped while writing it: writes take far less, and each one refreshes it. */
const STALE_MS = 60 * 60 * 1000;

/** Deletes the files in `dir` (a temp directory, shared by every process) that nobody wrote to for an hour. */
export async function removeStaleTemp(dir: string): Promise<void> {
  for (const name of await fs.readdir(dir)) {
    const file = path.join(dir, name);
    const st = await fs.stat(file).catch(() => undefined);
    if (st?.isFile() && Date.now() - st.mtimeMs > STALE_MS) await fs.rm(file, { force: true });
  }
}
