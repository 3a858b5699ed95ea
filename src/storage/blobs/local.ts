import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, renameSync, rmSync, writeFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HashMismatchError, TooLargeError, type BlobStore, type StagedCheck } from './driver.js';

export interface Signer {
  sign(payload: string): string;
  verify(payload: string, signature: string): boolean;
}

export type UploadTokenCheck = 'ok' | 'expired' | 'invalid';

/**
 * Blobs as files: `<dir>/<ab>/<hash>`, staged uploads under `<dir>/uploads/<stage>/<index>`.
 * Every write goes to `<dir>/tmp` first and is renamed into place, so a reader never sees
 * half a file. Upload URLs point at our own server (`PUT /v1/blobs/upload/...`), signed with
 * the server secret over (upload, index, hash, expiry).
 */
export class LocalBlobStore implements BlobStore {
  readonly kind = 'local' as const;
  /** Directories this process made (or found), so each file write skips its mkdir. */
  private readonly madeDirs = new Set<string>();
  /** Temp file names: this instance's random prefix and a counter (no random bytes per file). */
  private readonly tmpPrefix = randomBytes(9).toString('base64url');
  private tmpCount = 0;

  constructor(
    readonly dir: string,
    private readonly signer: Signer,
    /** Read on every call: the public URL may be set after the server listens. */
    private readonly publicUrl: () => string,
  ) {}

  async init(): Promise<void> {
    await fs.mkdir(path.join(this.dir, 'tmp'), { recursive: true });
    await fs.mkdir(path.join(this.dir, 'uploads'), { recursive: true });
    await fs.mkdir(this.trashDir(), { recursive: true });
    // What a process that stopped meanwhile left to delete (see discardStage).
    for (const name of await fs.readdir(this.trashDir())) this.deleteInBackground(path.join(this.trashDir(), name));
  }

  private trashDir(): string {
    return path.join(this.dir, 'trash');
  }

  private deleteInBackground(dir: string): void {
    fs.rm(dir, { recursive: true, force: true }).catch((err: Error) => console.error(`[blobs] could not delete ${dir}: ${err.message}`));
  }

  private casPath(hash: string): string {
    return path.join(this.dir, hash.slice(0, 2), hash);
  }

  private stagedPath(stage: string, index: number): string {
    return path.join(this.stageDir(stage), String(index));
  }

  private stageDir(stage: string): string {
    // Stage names are our own ids; refuse anything that could leave the staging directory.
    if (!/^[A-Za-z0-9_-]{1,160}$/.test(stage)) throw new Error(`invalid stage name ${JSON.stringify(stage)}`);
    return path.join(this.dir, 'uploads', stage);
  }

  private tmpPath(): string {
    return path.join(this.dir, 'tmp', `${this.tmpPrefix}-${(this.tmpCount++).toString(36)}`);
  }

  private static payload(uploadId: string, index: number, hash: string, exp: number): string {
    return `put\n${uploadId}\n${index}\n${hash}\n${exp}`;
  }

  private static batchPayload(uploadId: string, exp: number): string {
    return `batch\n${uploadId}\n${exp}`;
  }

  async uploadUrl(p: { uploadId: string; index: number; hash: string; expiresAt: Date }) {
    const exp = Math.floor(p.expiresAt.getTime() / 1000);
    const sig = this.signer.sign(LocalBlobStore.payload(p.uploadId, p.index, p.hash, exp));
    const url = `${this.publicUrl()}/v1/blobs/upload/${encodeURIComponent(p.uploadId)}/${p.index}?h=${p.hash}&exp=${exp}&sig=${sig}`;
    return { url, headers: { 'Content-Type': 'application/octet-stream' } };
  }

  /**
   * One URL for many files of an upload: the body is a tar of declared files (entry name =
   * file name), each checked against its declared hash as its own PUT would be.
   */
  async batchUploadUrl(p: { uploadId: string; expiresAt: Date }) {
    const exp = Math.floor(p.expiresAt.getTime() / 1000);
    const sig = this.signer.sign(LocalBlobStore.batchPayload(p.uploadId, exp));
    const url = `${this.publicUrl()}/v1/blobs/upload/${encodeURIComponent(p.uploadId)}?exp=${exp}&sig=${sig}`;
    return { url, headers: { 'Content-Type': 'application/x-tar' } };
  }

  checkBatchToken(p: { uploadId: string; exp: number; sig: string }, now: Date): UploadTokenCheck {
    if (!this.signer.verify(LocalBlobStore.batchPayload(p.uploadId, p.exp), p.sig)) return 'invalid';
    return p.exp * 1000 < now.getTime() ? 'expired' : 'ok';
  }

  /** Checks the signature of a PUT: any change to upload, index, hash or expiry breaks it. */
  checkUploadToken(p: { uploadId: string; index: number; hash: string; exp: number; sig: string }, now: Date): UploadTokenCheck {
    if (!this.signer.verify(LocalBlobStore.payload(p.uploadId, p.index, p.hash, p.exp), p.sig)) return 'invalid';
    return p.exp * 1000 < now.getTime() ? 'expired' : 'ok';
  }

  async parseUploadUrl(raw: string, now: Date) {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      return null;
    }
    const m = /\/v1\/blobs\/upload\/([^/]+)\/(\d+)$/.exec(url.pathname);
    if (!m || !raw.startsWith(`${this.publicUrl()}/`)) return null;
    const p = {
      uploadId: decodeURIComponent(m[1]),
      index: Number(m[2]),
      hash: url.searchParams.get('h') ?? '',
      exp: Number(url.searchParams.get('exp')),
      sig: url.searchParams.get('sig') ?? '',
    };
    return this.checkUploadToken(p, now) === 'ok' ? { uploadId: p.uploadId, index: p.index } : null;
  }

  /**
   * Receives a PUT: hashes while streaming into a temp file; on a hash mismatch or an
   * oversized body nothing is kept; on success the file becomes the staged upload file.
   */
  async receive(uploadId: string, index: number, hash: string, body: Readable, limit: number): Promise<number> {
    const tmp = this.tmpPath();
    const hasher = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        if (size > limit) return done(new TooLargeError(`the body exceeds ${limit} bytes`));
        hasher.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(body, meter, createWriteStream(tmp));
      const actual = hasher.digest('hex');
      if (actual !== hash) throw new HashMismatchError(hash, actual);
      await this.renameInto(tmp, this.stagedPath(uploadId, index));
      return size;
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  /**
   * `receive` for bytes already in memory (the small files of a batch, up to 1 MiB each). The
   * file is written and renamed synchronously: one after the other, such writes cost about
   * half the CPU of thread-pool writes, which contend for the same directories and journal
   * (docs/PERFORMANCE.md, "Upload"); a write of this size holds the event loop for well under
   * a millisecond.
   */
  async receiveBytes(uploadId: string, index: number, hash: string, bytes: Buffer): Promise<void> {
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== hash) throw new HashMismatchError(hash, actual);
    const target = this.stagedPath(uploadId, index);
    await this.inDir(target, () => {
      const tmp = this.tmpPath();
      try {
        writeFileSync(tmp, bytes);
        renameSync(tmp, target);
      } catch (err) {
        rmSync(tmp, { force: true });
        throw err;
      }
    });
  }

  /** Renames a finished temp file to `target`. */
  private renameInto(tmp: string, target: string): Promise<void> {
    return this.inDir(target, () => fs.rename(tmp, target));
  }

  /**
   * Runs `write` (which creates `target`) after making the target's directory, once per
   * process; if the directory went away meanwhile (a discarded staging area), makes it again.
   */
  private async inDir(target: string, write: () => Promise<void> | void): Promise<void> {
    const dir = path.dirname(target);
    if (!this.madeDirs.has(dir)) {
      await fs.mkdir(dir, { recursive: true });
      this.madeDirs.add(dir);
    }
    try {
      await write();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.madeDirs.delete(dir);
      await fs.mkdir(dir, { recursive: true });
      await write();
    }
  }

  async verifyStaged(stage: string, index: number, _hash: string, inlineLimit: number): Promise<StagedCheck> {
    // Hashed while it streamed in (receive, receiveBytes) or written by us (putStaged), and
    // renamed into place only then: a staged file here always holds its declared content.
    const file = this.stagedPath(stage, index);
    const stat = await fs.stat(file).catch(() => undefined);
    if (!stat) return { status: 'missing' };
    if (stat.size <= inlineLimit) return { status: 'ok', size: stat.size, bytes: await fs.readFile(file) };
    return { status: 'ok', size: stat.size };
  }

  async promoteStaged(stage: string, index: number, hash: string): Promise<void> {
    const target = this.casPath(hash);
    const staged = this.stagedPath(stage, index);
    // A hard link is one step, all or nothing, and leaves the staged file for a retried complete.
    try {
      await this.inDir(target, () => fs.link(staged, target));
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return; // the store has this content already
      if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'ENOTSUP') throw err;
    }
    // A file system without hard links: copy, then rename into place.
    if (await exists(target)) return;
    const tmp = this.tmpPath();
    try {
      await fs.copyFile(staged, tmp);
      await this.renameInto(tmp, target);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  async readStaged(stage: string, index: number): Promise<Readable | null> {
    const file = this.stagedPath(stage, index);
    if (!(await exists(file))) return null;
    return createReadStream(file);
  }

  async putStaged(stage: string, index: number, body: Buffer | (() => Readable)): Promise<void> {
    await this.writeAtomically(this.stagedPath(stage, index), body);
  }

  /**
   * Takes the staging area away at once (a rename into `trash/`) and deletes its files in the
   * background: deleting a thousand files takes 0.2 s on a busy disk, which a complete does not
   * wait for. What is left when the process stops is deleted at the next start (init).
   */
  async discardStage(stage: string): Promise<void> {
    const dir = this.stageDir(stage);
    this.madeDirs.delete(dir);
    const trash = path.join(this.trashDir(), `${this.tmpPrefix}-${(this.tmpCount++).toString(36)}`);
    try {
      await fs.rename(dir, trash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // Nothing staged, or no trash directory any more: delete in place.
      await fs.rm(dir, { recursive: true, force: true });
      return;
    }
    this.deleteInBackground(trash);
  }

  async put(hash: string, bytes: Buffer): Promise<void> {
    const target = this.casPath(hash);
    if (await exists(target)) return;
    await this.writeAtomically(target, bytes);
  }

  private async writeAtomically(target: string, body: Buffer | (() => Readable)): Promise<void> {
    const tmp = this.tmpPath();
    try {
      if (Buffer.isBuffer(body)) await fs.writeFile(tmp, body);
      else await pipeline(body(), createWriteStream(tmp));
      await this.renameInto(tmp, target);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  async get(hash: string): Promise<Readable> {
    const file = this.casPath(hash);
    // Open first so a missing blob fails here, not halfway through a response.
    const handle = await fs.open(file, 'r');
    return handle.createReadStream();
  }

  read(hash: string): Promise<Buffer> {
    return fs.readFile(this.casPath(hash));
  }

  async has(hash: string): Promise<boolean> {
    return exists(this.casPath(hash));
  }

  async delete(hashes: string[]): Promise<void> {
    for (const hash of hashes) await fs.rm(this.casPath(hash), { force: true });
  }

  async check(): Promise<void> {
    await fs.access(path.join(this.dir, 'tmp'), fs.constants.W_OK);
  }

  async close(): Promise<void> {}
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
