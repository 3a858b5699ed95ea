import type { Readable } from 'node:stream';

/**
 * Where blob bytes live. Two areas:
 * - the content-addressed store: `blobs/<ab>/<sha256 hex>`, one object per distinct content;
 * - staging: `uploads/<stage>/<index>`, where clients PUT upload files (and the snapshot job
 *   puts extracted files) before `complete` promotes them into the store.
 * Every hash here is 64 lowercase hex. The database (`blobs` rows) says which blobs count;
 * see src/storage/README.md for the order of writes that keeps the two consistent.
 */
export interface BlobStore {
  readonly kind: 'local' | 's3';

  /** A URL the client PUTs the bytes of upload file `index` to, with the headers to send. */
  uploadUrl(p: { uploadId: string; index: number; hash: string; expiresAt: Date }): Promise<{ url: string; headers: Record<string, string> }>;

  /**
   * One URL for a tar of many files of the upload, when the store can take one (the local
   * store: our own server receives it). S3 has none: clients PUT each file to S3 directly.
   */
  batchUploadUrl?(p: { uploadId: string; expiresAt: Date }): Promise<{ url: string; headers: Record<string, string> }>;

  /**
   * Which staged upload file a URL this store issued points at, if it is one, is unexpired and
   * has not been altered; null otherwise.
   */
  parseUploadUrl(url: string, now: Date): Promise<{ uploadId: string; index: number } | null>;

  /**
   * Checks a staged file against its declared hash. `bytes` is filled for small files
   * (≤ `inlineLimit`). A mismatching staged object is deleted. (The local store hashes files
   * on their way in and stages only matching ones; S3 cannot, so it hashes here.)
   */
  verifyStaged(stage: string, index: number, hash: string, inlineLimit: number): Promise<StagedCheck>;

  /**
   * Copies a verified staged file into the store (no-op when the store already has it).
   * `tag` (from verifyStaged) makes the copy fail if the staged object changed since.
   */
  promoteStaged(stage: string, index: number, hash: string, tag?: string): Promise<void>;

  /** Reads a staged file (e.g. a snapshot archive); null when nothing was PUT there. */
  readStaged(stage: string, index: number): Promise<Readable | null>;

  /** Stages server-made bytes (the snapshot job's extracted files). */
  putStaged(stage: string, index: number, body: Buffer | (() => Readable), size: number): Promise<void>;

  /** Removes everything staged under `stage`. */
  discardStage(stage: string, count: number): Promise<void>;

  /** Writes content whose hash the caller computed (no-op when present). */
  put(hash: string, bytes: Buffer): Promise<void>;

  get(hash: string): Promise<Readable>;
  /** A whole blob in memory (workspace files, merge inputs); on S3 through the worker's cache. */
  read(hash: string): Promise<Buffer>;
  has(hash: string): Promise<boolean>;
  /** Deletes store objects; missing ones are ignored. */
  delete(hashes: string[]): Promise<void>;
  /** Every blob the store holds, a page at a time, with when it was written (the store check, core/gc.ts). */
  listStored(): AsyncIterable<StoredBlob[]>;

  /** Health: throws when the store does not answer. */
  check(): Promise<void>;
  close(): Promise<void>;
}

export interface StoredBlob {
  hash: string;
  modifiedAt: Date;
}

/** A store object's name is a hash: 64 lowercase hex. */
export const HASH_NAME = /^[0-9a-f]{64}$/;

export type StagedCheck =
  | { status: 'ok'; size: number; bytes?: Buffer; tag?: string }
  | { status: 'missing' }
  | { status: 'mismatch'; actualHash: string };

export class HashMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`the bytes hash to sha256-${actual}, not the declared sha256-${expected}`);
  }
}

export class TooLargeError extends Error {}

export function casKey(hash: string): string {
  return `blobs/${hash.slice(0, 2)}/${hash}`;
}

/** A percent-encoded URL path segment, decoded; null when its encoding is broken (`%ZZ`). */
export function decodeSegment(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

export function stagedKey(stage: string, index: number): string {
  return `uploads/${stage}/${index}`;
}

/** Small text contents are also kept in the database (`blobs.data`; core/trees.ts keptInline). */
export const INLINE_LIMIT = 64 * 1024;
