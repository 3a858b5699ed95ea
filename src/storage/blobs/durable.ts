import fs from 'node:fs/promises';

/*
 * Durability of the local blob store. A database commit can point at a blob only once its
 * bytes and its name would survive a power cut: the file's contents are flushed before it is
 * renamed or linked into the store, and the directory holding the new name is flushed before
 * the write returns (src/storage/README.md, "Consistency rules"). Without the second step a
 * crash can keep the committed row and lose the file, however well its contents were flushed.
 */

/** Flushes a file's contents to the disk. */
export async function syncFile(file: string): Promise<void> {
  const handle = await fs.open(file, 'r+');
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/** Flushes a directory's entries (the names created, renamed or linked into it). */
async function syncDirectory(dir: string): Promise<void> {
  // A directory taken away meanwhile (a discarded staging area) has no names left to keep.
  const handle = await fs.open(dir, 'r').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (!handle) return;
  try {
    await handle.sync();
  } catch (err) {
    // Platforms that cannot flush a directory (Windows) order their metadata writes anyway.
    if (!['EINVAL', 'EISDIR', 'EPERM', 'EBADF'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
  } finally {
    await handle.close();
  }
}

/**
 * Directory flushes, shared: a flush covers every name created before it started, so calls
 * arriving while one runs wait for the next one and share it. A complete linking a thousand
 * blobs into 256 directories, or a sync writing many merged files, pays for a few flushes per
 * directory rather than one per file.
 */
export class DirectorySyncs {
  private readonly running = new Map<string, Promise<void>>();
  private readonly next = new Map<string, Promise<void>>();

  /** Resolves once a flush of `dir` that started after this call has finished. */
  sync(dir: string): Promise<void> {
    const queued = this.next.get(dir);
    if (queued) return queued;
    const running = this.running.get(dir);
    if (!running) return this.start(dir);
    const after = running
      .catch(() => undefined)
      .then(() => {
        this.next.delete(dir);
        return this.start(dir);
      });
    this.next.set(dir, after);
    return after;
  }

  private start(dir: string): Promise<void> {
    const flush: Promise<void> = syncDirectory(dir).finally(() => {
      if (this.running.get(dir) === flush) this.running.delete(dir);
    });
    this.running.set(dir, flush);
    return flush;
  }
}
