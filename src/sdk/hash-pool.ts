import os from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * Reads and hashes files on worker threads, so hashing a folder uses every core and leaves
 * the caller's event loop free. Each worker reads through one reused 1 MiB buffer: memory
 * touched for the first time is costly (a page fault per 4 KiB, expensive in some VMs), so
 * hashing a 100 MB folder should not leave 100 MB of fresh buffers behind.
 */

// Plain JavaScript (an eval worker), so it runs the same from TypeScript sources or a build.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
const buf = Buffer.allocUnsafeSlow(1024 * 1024);
parentPort.on('message', ({ id, file }) => {
  try {
    const h = createHash('sha256');
    let size = 0;
    const fd = fs.openSync(file, 'r');
    try {
      let n;
      while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) {
        h.update(buf.subarray(0, n));
        size += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    parentPort.postMessage({ id, hash: h.digest('hex'), size });
  } catch (err) {
    parentPort.postMessage({ id, error: err.message });
  }
});
`;

interface Reply {
  id: number;
  hash?: string;
  size?: number;
  error?: string;
}

interface Pending {
  resolve: (r: { hash: string; size: number }) => void;
  reject: (err: Error) => void;
  worker: number;
}

export class HashPool {
  private readonly workers: Worker[];
  /** Files queued on each worker: a file goes to the least loaded one. */
  private readonly queued: number[];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;

  /** One thread per core, up to 8. */
  static readonly DEFAULT_THREADS = Math.max(1, Math.min(os.availableParallelism(), 8));

  constructor(threads = HashPool.DEFAULT_THREADS) {
    this.workers = Array.from({ length: threads }, (_, w) => {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.on('message', (m: Reply) => this.settle(m));
      worker.on('error', (err) => this.fail(w, err));
      worker.on('exit', (code) => this.fail(w, new Error(`a hashing thread exited (${code})`)));
      return worker;
    });
    this.queued = this.workers.map(() => 0);
  }

  get size(): number {
    return this.workers.length;
  }

  /** The file's sha256 (hex) and size, as read. */
  hash(file: string): Promise<{ hash: string; size: number }> {
    const worker = this.queued.indexOf(Math.min(...this.queued));
    if (!Number.isFinite(this.queued[worker])) return Promise.reject(new Error('the hashing threads have stopped'));
    const id = this.nextId++;
    this.queued[worker]++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker });
      this.workers[worker].postMessage({ id, file });
    });
  }

  private settle(m: Reply): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    this.queued[p.worker]--;
    if (m.error !== undefined) p.reject(new Error(m.error));
    else p.resolve({ hash: m.hash!, size: m.size! });
  }

  private fail(worker: number, err: Error): void {
    this.queued[worker] = Infinity; // takes no more files
    for (const [id, p] of this.pending) {
      if (p.worker !== worker) continue;
      this.pending.delete(id);
      p.reject(err);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
