import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HASH_NAME, HashMismatchError, TooLargeError, decodeSegment, type BlobStore, type StagedCheck, type StoredBlob } from './driver.js';
import { DirectorySyncs, syncFile } from './durable.js';
import { removeStaleTemp } from './leftovers.js';
import { INDEX_SUFFIX, PACK_PREFIX, PackWriter, readPackIndex, readPacked, readPackedSync, streamPacked, type PackEntry, type PackedBlob } from './packs.js';

export interface Signer {
  sign(payload: string): string;
  verify(payload: string, signature: string): boolean;
}

export type UploadTokenCheck = 'ok' | 'expired' | 'invalid';

/** What this process knows of one staging area's packs. */
interface StagedPacks {
  /** Index files read so far. */
  loaded: Set<string>;
  /** Upload file index → where its bytes are. */
  files: Map<number, PackedBlob>;
  /** Staged pack → its promotion into the store (once per pack, not per file). */
  promoted: Map<string, Promise<void>>;
}

/** Staging areas whose packs this process remembers (the ones being completed). */
const STAGES_KEPT = 64;

/**
 * Blobs as files: `<dir>/<ab>/<hash>`, or many blobs in one pack file, `<dir>/packs/pack-*`
 * (packs.ts). Staged uploads are under `<dir>/uploads/<stage>/`: `<index>` for a file PUT on
 * its own, a pack for a batch PUT. Every write goes to `<dir>/tmp` first (a pack's index too)
 * and is renamed into place, so a reader never sees half a file. Upload URLs point at our own
 * server (`PUT /v1/blobs/upload/...`), signed with the server secret over (upload, index,
 * hash, expiry). Every write is durable before it returns (durable.ts): its bytes are flushed
 * before the rename or link that names it, and its directory after.
 */
export class LocalBlobStore implements BlobStore {
  readonly kind = 'local' as const;
  /** Directories this process made (or found), so each file write skips its mkdir. */
  private readonly madeDirs = new Set<string>();
  /** Temp file names: this instance's random prefix and a counter (no random bytes per file). */
  private readonly tmpPrefix = randomBytes(9).toString('base64url');
  private tmpCount = 0;
  private readonly stages = new Map<string, StagedPacks>();
  /** The store's packs (bytes file → entries) and, for each packed hash, one place holding it. */
  private readonly packs = new Map<string, PackEntry[]>();
  private readonly packed = new Map<string, PackedBlob>();
  private readonly dirSyncs = new DirectorySyncs();

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
    await fs.mkdir(this.packsDir(), { recursive: true });
    await this.dirSyncs.sync(this.dir);
    await this.dirSyncs.sync(path.dirname(this.dir)); // the store directory's own name
    // What a process that stopped meanwhile left to delete (see discardStage), and the temp
    // files it was writing.
    for (const name of await fs.readdir(this.trashDir())) this.deleteInBackground(path.join(this.trashDir(), name));
    await removeStaleTemp(path.join(this.dir, 'tmp'));
  }

  private trashDir(): string {
    return path.join(this.dir, 'trash');
  }

  private packsDir(): string {
    return path.join(this.dir, 'packs');
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

  /** A name no other process or call uses (this instance's prefix and a counter). */
  private uniqueName(): string {
    return `${this.tmpPrefix}-${(this.tmpCount++).toString(36)}`;
  }

  private tmpPath(): string {
    return path.join(this.dir, 'tmp', this.uniqueName());
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
    const uploadId = m && decodeSegment(m[1]);
    if (!m || uploadId === null || !raw.startsWith(`${this.publicUrl()}/`)) return null;
    const p = {
      uploadId,
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
      await syncFile(tmp);
      await this.renameInto(tmp, this.stagedPath(uploadId, index));
      return size;
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  /**
   * A pack to stage the files of one batch PUT in (packs.ts): `add` or `addStream` each file,
   * then `finish`, which writes the pack's index and so makes its files count.
   */
  async openPack(stage: string): Promise<PackWriter> {
    const file = path.join(this.stageDir(stage), PACK_PREFIX + this.uniqueName());
    let writer: PackWriter | undefined;
    await this.inDir(file, () => {
      writer = PackWriter.open(file, (json) => this.writeAtomically(file + INDEX_SUFFIX, Buffer.from(json)));
    });
    return writer!;
  }

  /** Renames a finished (flushed) temp file to `target`, durably. */
  private async renameInto(tmp: string, target: string): Promise<void> {
    await this.inDir(target, () => fs.rename(tmp, target));
    await this.dirSyncs.sync(path.dirname(target));
  }

  /**
   * Runs `write` (which creates `target`) after making the target's directory, once per
   * process; if the directory went away meanwhile (a discarded staging area), makes it again.
   */
  private async inDir(target: string, write: () => Promise<void> | void): Promise<void> {
    const dir = path.dirname(target);
    if (!this.madeDirs.has(dir)) await this.makeDir(dir);
    try {
      await write();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await this.makeDir(dir);
      await write();
    }
  }

  /** Makes a directory of the store (`<ab>/`, a staging area), its name flushed like a file's. */
  private async makeDir(dir: string): Promise<void> {
    await fs.mkdir(dir, { recursive: true });
    await this.dirSyncs.sync(path.dirname(dir));
    this.madeDirs.add(dir);
  }

  async verifyStaged(stage: string, index: number, _hash: string, inlineLimit: number): Promise<StagedCheck> {
    // Hashed while it streamed in (receive, PackWriter) or written by us (putStaged), and
    // renamed into place (a pack: indexed) only then: what is staged holds its declared content.
    let packed = (await this.stagedPacks(stage, false)).files.get(index);
    if (!packed) {
      const file = this.stagedPath(stage, index);
      const stat = await fs.stat(file).catch(() => undefined);
      if (stat) return { status: 'ok', size: stat.size, ...(stat.size <= inlineLimit ? { bytes: await fs.readFile(file) } : {}) };
      packed = (await this.stagedPacks(stage, true)).files.get(index);
      if (!packed) return { status: 'missing' };
    }
    if (packed.size > inlineLimit) return { status: 'ok', size: packed.size };
    const bytes = readPackedSync(packed); // at most inlineLimit, and most often staged moments ago
    return bytes ? { status: 'ok', size: packed.size, bytes } : { status: 'missing' };
  }

  /**
   * The packs staged under `stage`, as far as this process has read them; `refresh` reads the
   * index files that arrived since.
   */
  private async stagedPacks(stage: string, refresh: boolean): Promise<StagedPacks> {
    let known = this.stages.get(stage);
    if (!known) {
      known = { loaded: new Set(), files: new Map(), promoted: new Map() };
      this.stages.set(stage, known);
      if (this.stages.size > STAGES_KEPT) this.stages.delete(this.stages.keys().next().value!);
      refresh = true;
    }
    if (!refresh) return known;
    const dir = this.stageDir(stage);
    for (const name of await readdirOrEmpty(dir)) {
      if (!name.endsWith(INDEX_SUFFIX) || known.loaded.has(name)) continue;
      const pack = path.join(dir, name.slice(0, -INDEX_SUFFIX.length));
      const entries = await readPackIndex(path.join(dir, name)).catch(ignoreMissing);
      if (!entries || !(await exists(pack))) continue; // discarded meanwhile
      for (const e of entries) known.files.set(e.index, { pack, offset: e.offset, size: e.size });
      known.loaded.add(name);
    }
    return known;
  }

  async promoteStaged(stage: string, index: number, hash: string): Promise<void> {
    const packs = await this.stagedPacks(stage, false);
    const packed = packs.files.get(index);
    if (packed) {
      let promotion = packs.promoted.get(packed.pack);
      if (!promotion) {
        promotion = this.promotePack(packed.pack);
        packs.promoted.set(packed.pack, promotion);
        promotion.catch(() => packs.promoted.delete(packed.pack)); // a retried complete tries again
      }
      return promotion;
    }
    const target = this.casPath(hash);
    const staged = this.stagedPath(stage, index);
    // A hard link is one step, all or nothing, and leaves the staged file for a retried complete.
    // Its contents were flushed when it was staged; the new name is flushed here (also when
    // the store had the content: the write that put it there may not have flushed it yet).
    try {
      await this.inDir(target, () => linkOrKeep(staged, target));
      await this.dirSyncs.sync(path.dirname(target));
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'ENOTSUP') throw err;
    }
    // A file system without hard links: copy, then rename into place.
    if (await exists(target)) return;
    const tmp = this.tmpPath();
    try {
      await fs.copyFile(staged, tmp);
      await syncFile(tmp);
      await this.renameInto(tmp, target);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  /**
   * Puts a staged pack's contents into the store. When the store has none of them yet, the
   * pack is hard-linked into `packs/` (bytes first, then its index); otherwise only the
   * contents it lacks are copied into a new pack, so identical content is kept once. A staged
   * pack stays for a retried complete; promoting it again adds nothing.
   */
  private async promotePack(staged: string): Promise<void> {
    const entries = await readPackIndex(staged + INDEX_SUFFIX);
    await this.loadPacks();
    const unique = [...new Map(entries.map((e) => [e.hash, e])).values()];
    const lacking: PackEntry[] = [];
    // existsSync: no exception for the common miss, and a thousand checks take a few ms.
    for (const e of unique) if (!this.packed.has(e.hash) && !existsSync(this.casPath(e.hash))) lacking.push(e);
    if (lacking.length === 0) return;
    if (lacking.length === unique.length) {
      const target = path.join(this.packsDir(), path.basename(staged));
      await linkOrKeep(staged, target);
      await linkOrKeep(staged + INDEX_SUFFIX, target + INDEX_SUFFIX);
      await this.dirSyncs.sync(this.packsDir()); // both flushed when staged (PackWriter.finish)
      this.addPack(target, entries);
      return;
    }
    const target = path.join(this.packsDir(), PACK_PREFIX + this.uniqueName());
    const tmp = this.tmpPath();
    const copy = PackWriter.open(tmp, (json) => this.writeAtomically(target + INDEX_SUFFIX, Buffer.from(json), () => fs.rename(tmp, target)));
    try {
      for (const e of lacking) {
        const bytes = await readPacked({ pack: staged, offset: e.offset, size: e.size });
        if (!bytes) throw Object.assign(new Error(`staged pack ${staged} is gone`), { code: 'ENOENT' });
        copy.add(e.index, e.hash, bytes);
      }
      await copy.finish();
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    this.addPack(target, await readPackIndex(target + INDEX_SUFFIX));
  }

  private addPack(pack: string, entries: PackEntry[]): void {
    this.packs.set(pack, entries);
    for (const e of entries) this.packed.set(e.hash, { pack, offset: e.offset, size: e.size });
  }

  /** Reads the index of every pack this process does not know yet; forgets packs that are gone. */
  private async loadPacks(): Promise<void> {
    const names = new Set(await readdirOrEmpty(this.packsDir()));
    let removed = false;
    for (const pack of this.packs.keys()) {
      if (names.has(path.basename(pack) + INDEX_SUFFIX)) continue;
      this.packs.delete(pack);
      removed = true;
    }
    if (removed) this.reindex();
    for (const name of names) {
      if (!name.endsWith(INDEX_SUFFIX)) continue;
      const pack = path.join(this.packsDir(), name.slice(0, -INDEX_SUFFIX.length));
      if (this.packs.has(pack)) continue;
      const entries = await readPackIndex(path.join(this.packsDir(), name)).catch(ignoreMissing);
      if (entries) this.addPack(pack, entries);
    }
  }

  private reindex(): void {
    this.packed.clear();
    for (const [pack, entries] of this.packs) for (const e of entries) this.packed.set(e.hash, { pack, offset: e.offset, size: e.size });
  }

  /**
   * A blob from wherever it is: a pack this process knows, its own file, or a pack another
   * process added. A pack that went away meanwhile left its contents as files (see delete).
   */
  private async fromStore<T>(hash: string, fromPack: (blob: PackedBlob) => Promise<T | null>, fromFile: (file: string) => Promise<T>): Promise<T> {
    const known = this.packed.get(hash);
    if (known) {
      const found = await fromPack(known);
      if (found !== null) return found;
    }
    try {
      return await fromFile(this.casPath(hash));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await this.loadPacks();
    const now = this.packed.get(hash);
    const found = now ? await fromPack(now) : null;
    return found ?? fromFile(this.casPath(hash));
  }

  async readStaged(stage: string, index: number): Promise<Readable | null> {
    const file = this.stagedPath(stage, index);
    if (await exists(file)) return createReadStream(file);
    const packed = (await this.stagedPacks(stage, true)).files.get(index);
    return packed ? streamPacked(packed) : null;
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
    this.stages.delete(stage);
    const trash = path.join(this.trashDir(), this.uniqueName());
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
    // Only the packs this process knows count here: content another process packed since is
    // written again as a file of its own, a harmless copy, where reading the pack directory on
    // every write (a run's files, a sync's merges) would not be.
    const known = this.packed.get(hash);
    if ((known && (await exists(known.pack))) || (await exists(this.casPath(hash)))) return;
    await this.writeAtomically(this.casPath(hash), bytes);
  }

  /** Writes `target` through a temp file; `before` runs just before the rename. */
  private async writeAtomically(target: string, body: Buffer | (() => Readable), before?: () => Promise<void>): Promise<void> {
    const tmp = this.tmpPath();
    try {
      if (Buffer.isBuffer(body)) await fs.writeFile(tmp, body);
      else await pipeline(body(), createWriteStream(tmp));
      await syncFile(tmp);
      await before?.();
      await this.renameInto(tmp, target);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  get(hash: string): Promise<Readable> {
    // Open first so a missing blob fails here, not halfway through a response.
    return this.fromStore(hash, streamPacked, async (file) => (await fs.open(file, 'r')).createReadStream());
  }

  read(hash: string): Promise<Buffer> {
    return this.fromStore(hash, readPacked, (file) => fs.readFile(file));
  }

  async has(hash: string): Promise<boolean> {
    const inPack = async (blob: PackedBlob) => ((await exists(blob.pack)) ? true : null);
    return this.fromStore(hash, inPack, (file) => fs.access(file).then(() => true)).catch(() => false);
  }

  /**
   * Deletes blobs. A pack holding any of them is taken apart: its other contents become files
   * of their own (each written before the pack goes, so none is ever missing), then the pack
   * is removed. Packs never change in place, so two processes deleting from one pack at once
   * both end with the same files.
   */
  async delete(hashes: string[]): Promise<void> {
    if (hashes.length === 0) return;
    const doomed = new Set(hashes);
    await this.loadPacks();
    let apart = false;
    for (const [pack, entries] of [...this.packs]) {
      if (!entries.some((e) => doomed.has(e.hash))) continue;
      for (const e of new Map(entries.map((x) => [x.hash, x])).values()) {
        if (doomed.has(e.hash) || (await exists(this.casPath(e.hash)))) continue;
        const bytes = await readPacked({ pack, offset: e.offset, size: e.size });
        if (!bytes) break; // another process took this pack apart
        await this.writeAtomically(this.casPath(e.hash), bytes);
      }
      await fs.rm(pack + INDEX_SUFFIX, { force: true });
      await fs.rm(pack, { force: true });
      this.packs.delete(pack);
      apart = true;
    }
    if (apart) this.reindex();
    for (const hash of hashes) await fs.rm(this.casPath(hash), { force: true });
  }

  async *listStored(): AsyncIterable<StoredBlob[]> {
    for (const sub of await this.hashDirs()) {
      const page: StoredBlob[] = [];
      for (const name of await readdirOrEmpty(path.join(this.dir, sub))) {
        if (!HASH_NAME.test(name)) continue;
        const stat = await fs.stat(path.join(this.dir, sub, name)).catch(ignoreMissing);
        if (stat) page.push({ hash: name, modifiedAt: stat.mtime });
      }
      if (page.length > 0) yield page;
    }
    await this.loadPacks();
    for (const [pack, entries] of [...this.packs]) {
      const stat = await fs.stat(pack).catch(ignoreMissing);
      if (stat) yield entries.map((e) => ({ hash: e.hash, modifiedAt: stat.mtime }));
    }
  }

  /** The `<ab>` directories blob files are kept in. */
  private async hashDirs(): Promise<string[]> {
    return (await readdirOrEmpty(this.dir)).filter((name) => /^[0-9a-f]{2}$/.test(name));
  }

  /** Every stored blob with its size: own files and packed ones (tests, diagnostics). */
  async list(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const sub of await this.hashDirs()) {
      for (const name of await readdirOrEmpty(path.join(this.dir, sub))) out.set(name, (await fs.stat(path.join(this.dir, sub, name))).size);
    }
    await this.loadPacks();
    for (const [hash, blob] of this.packed) out.set(hash, blob.size);
    return out;
  }

  async check(): Promise<void> {
    await fs.access(path.join(this.dir, 'tmp'), fs.constants.W_OK);
  }

  async close(): Promise<void> {}
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  return fs.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
}

function ignoreMissing(err: NodeJS.ErrnoException): null {
  if (err.code === 'ENOENT') return null;
  throw err;
}

/** Hard-links `from` to `to`; an existing `to` (linked before) is kept. */
async function linkOrKeep(from: string, to: string): Promise<void> {
  await fs.link(from, to).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
