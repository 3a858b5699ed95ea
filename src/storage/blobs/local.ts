import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
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

  constructor(
    readonly dir: string,
    private readonly signer: Signer,
    /** Read on every call: the public URL may be set after the server listens. */
    private readonly publicUrl: () => string,
  ) {}

  async init(): Promise<void> {
    await fs.mkdir(path.join(this.dir, 'tmp'), { recursive: true });
    await fs.mkdir(path.join(this.dir, 'uploads'), { recursive: true });
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
    return path.join(this.dir, 'tmp', randomBytes(12).toString('hex'));
  }

  private static payload(uploadId: string, index: number, hash: string, exp: number): string {
    return `put\n${uploadId}\n${index}\n${hash}\n${exp}`;
  }

  async uploadUrl(p: { uploadId: string; index: number; hash: string; expiresAt: Date }) {
    const exp = Math.floor(p.expiresAt.getTime() / 1000);
    const sig = this.signer.sign(LocalBlobStore.payload(p.uploadId, p.index, p.hash, exp));
    const url = `${this.publicUrl()}/v1/blobs/upload/${encodeURIComponent(p.uploadId)}/${p.index}?h=${p.hash}&exp=${exp}&sig=${sig}`;
    return { url, headers: { 'Content-Type': 'application/octet-stream' } };
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
      const target = this.stagedPath(uploadId, index);
      await fs.mkdir(path.dirname(target), { recursive: true });
      await fs.rename(tmp, target);
      return size;
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }

  async verifyStaged(stage: string, index: number, hash: string, inlineLimit: number): Promise<StagedCheck> {
    // Verified while it streamed in (receive) or written by us (putStaged).
    const file = this.stagedPath(stage, index);
    const stat = await fs.stat(file).catch(() => undefined);
    if (!stat) return { status: 'missing' };
    if (stat.size <= inlineLimit) {
      const bytes = await fs.readFile(file);
      const actual = createHash('sha256').update(bytes).digest('hex');
      if (actual !== hash) return { status: 'mismatch', actualHash: actual };
      return { status: 'ok', size: stat.size, bytes };
    }
    return { status: 'ok', size: stat.size };
  }

  async promoteStaged(stage: string, index: number, hash: string): Promise<void> {
    const target = this.casPath(hash);
    if (await exists(target)) return;
    await fs.mkdir(path.dirname(target), { recursive: true });
    // A hard link is instant and leaves the staged file for a retried complete.
    const tmp = this.tmpPath();
    try {
      await fs.link(this.stagedPath(stage, index), tmp);
    } catch {
      await fs.copyFile(this.stagedPath(stage, index), tmp);
    }
    await fs.rename(tmp, target);
  }

  async readStaged(stage: string, index: number): Promise<Readable | null> {
    const file = this.stagedPath(stage, index);
    if (!(await exists(file))) return null;
    return createReadStream(file);
  }

  async putStaged(stage: string, index: number, body: Buffer | (() => Readable)): Promise<void> {
    const target = this.stagedPath(stage, index);
    await fs.mkdir(path.dirname(target), { recursive: true });
    await this.writeAtomically(target, body);
  }

  async discardStage(stage: string): Promise<void> {
    await fs.rm(this.stageDir(stage), { recursive: true, force: true });
  }

  async put(hash: string, bytes: Buffer): Promise<void> {
    const target = this.casPath(hash);
    if (await exists(target)) return;
    await fs.mkdir(path.dirname(target), { recursive: true });
    await this.writeAtomically(target, bytes);
  }

  private async writeAtomically(target: string, body: Buffer | (() => Readable)): Promise<void> {
    const tmp = this.tmpPath();
    try {
      await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body(), createWriteStream(tmp));
      await fs.rename(tmp, target);
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }

  async get(hash: string): Promise<Readable> {
    const file = this.casPath(hash);
    // Open first so a missing blob fails here, not halfway through a response.
    const handle = await fs.open(file, 'r');
    return handle.createReadStream();
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
