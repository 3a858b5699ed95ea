import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BundleNames, MAX_FILES, pathProblem } from '../core/trees.js';
import { ArchiveError, detectFormat, readArchive } from '../storage/blobs/archive.js';

/** What a zip bundle may unpack to on the client: the server checks its own limit again. */
const MAX_BUNDLE_BYTES = 1024 * 1024 * 1024;

/**
 * Runs `use` on the files of a zip (or tar.gz) bundle, unpacked into a temporary folder that
 * is removed afterwards. The archive is checked whole first, as a snapshot's is (paths that
 * leave the folder, links, sizes, bombs): a bad one unpacks nothing.
 */
export async function withUnpackedBundle<T>(file: string, use: (folder: string) => Promise<T>): Promise<T> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bundle-'));
  try {
    const limits = { maxFiles: MAX_FILES, maxBytes: MAX_BUNDLE_BYTES, pathProblem, names: () => new BundleNames() };
    await readArchive(file, await detectFormat(file), limits, async (name, _size, body) => {
      const target = path.join(dir, ...name.split('/'));
      await fs.mkdir(path.dirname(target), { recursive: true });
      await pipeline(body, createWriteStream(target));
    });
    return await use(dir);
  } catch (err) {
    if (err instanceof ArchiveError) throw new Error(`${path.resolve(file)} is not a bundle this can publish: ${err.message}.`);
    throw err;
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
