import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { BlobCache } from './cache.js';
import { HASH_NAME, casKey, decodeSegment, stagedKey, type BlobStore, type StagedCheck, type StoredBlob } from './driver.js';

export interface S3Options {
  bucket: string;
  prefix: string;
  endpoint: string | undefined;
  region: string | undefined;
}

/** `s3://bucket/some/prefix` → bucket and prefix (no leading or trailing slash). */
export function parseS3Url(storage: string): { bucket: string; prefix: string } {
  const rest = storage.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const prefix = slash < 0 ? '' : rest.slice(slash + 1).replace(/^\/+|\/+$/g, '');
  return { bucket, prefix };
}

/**
 * S3-compatible store. Clients PUT to presigned URLs under the staging prefix; S3 does not
 * check our sha256 there (no signed checksum header, so the documented "Content-Type only"
 * PUT works everywhere), so `verifyStaged` streams each staged object and hashes it before
 * `promoteStaged` copies it to its content address.
 */
export class S3BlobStore implements BlobStore {
  readonly kind = 's3' as const;
  readonly client: S3Client;

  constructor(
    private readonly opts: S3Options,
    /** This worker's copies of blobs it read (`read`); none: every read is a GET. */
    private readonly cache?: BlobCache,
  ) {
    this.client = new S3Client({
      region: opts.region ?? 'us-east-1',
      ...(opts.endpoint ? { endpoint: opts.endpoint, forcePathStyle: true } : {}),
      // The SDK's default would bake an empty-body CRC32 into presigned URLs.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  private key(k: string): string {
    return this.opts.prefix ? `${this.opts.prefix}/${k}` : k;
  }

  private presignPut(key: string, expiresIn: number, signingDate?: Date): Promise<string> {
    return getSignedUrl(this.client, new PutObjectCommand({ Bucket: this.opts.bucket, Key: key }), { expiresIn, ...(signingDate ? { signingDate } : {}) });
  }

  async uploadUrl(p: { uploadId: string; index: number; hash: string; expiresAt: Date }) {
    const expiresIn = Math.max(1, Math.round((p.expiresAt.getTime() - Date.now()) / 1000));
    const url = await this.presignPut(this.key(stagedKey(p.uploadId, p.index)), expiresIn);
    return { url, headers: { 'Content-Type': 'application/octet-stream' } };
  }

  async parseUploadUrl(raw: string, now: Date) {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      return null;
    }
    const m = /\/uploads\/([^/]+)\/(\d+)$/.exec(url.pathname);
    const date = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(url.searchParams.get('X-Amz-Date') ?? '');
    const expiresIn = Number(url.searchParams.get('X-Amz-Expires'));
    const signature = url.searchParams.get('X-Amz-Signature');
    // SigV4 presigned URLs last at most 7 days: ours never more, and the signer refuses more.
    if (!m || !date || !Number.isInteger(expiresIn) || expiresIn <= 0 || expiresIn > 7 * 24 * 3600 || !signature) return null;
    const signingDate = new Date(Date.UTC(+date[1], +date[2] - 1, +date[3], +date[4], +date[5], +date[6]));
    if (signingDate.getTime() + expiresIn * 1000 < now.getTime()) return null;
    const uploadId = decodeSegment(m[1]);
    if (uploadId === null) return null;
    const index = Number(m[2]);
    // Signing is deterministic: re-sign what we would have issued and compare.
    const expected = new URL(await this.presignPut(this.key(stagedKey(uploadId, index)), expiresIn, signingDate));
    if (expected.origin !== url.origin || expected.pathname !== url.pathname) return null;
    if (expected.searchParams.get('X-Amz-Signature') !== signature) return null;
    return { uploadId, index };
  }

  async verifyStaged(stage: string, index: number, hash: string, inlineLimit: number): Promise<StagedCheck> {
    const key = this.key(stagedKey(stage, index));
    const object = await this.getObjectWithTag(key);
    if (!object) return { status: 'missing' };
    const { body, tag } = object;
    const hasher = createHash('sha256');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body as AsyncIterable<Buffer>) {
      hasher.update(chunk);
      size += chunk.length;
      if (size <= inlineLimit) chunks.push(chunk);
    }
    const actual = hasher.digest('hex');
    if (actual !== hash) {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key: key }));
      return { status: 'mismatch', actualHash: actual };
    }
    return { status: 'ok', size, tag, ...(size <= inlineLimit ? { bytes: Buffer.concat(chunks) } : {}) };
  }

  async promoteStaged(stage: string, index: number, hash: string, tag?: string): Promise<void> {
    if (await this.has(hash)) return;
    const source = `${this.opts.bucket}/${this.key(stagedKey(stage, index))}`;
    // The presigned URL stays valid: copy only the object we hashed, never one PUT since.
    await this.client.send(
      new CopyObjectCommand({
        Bucket: this.opts.bucket,
        Key: this.key(casKey(hash)),
        CopySource: source.split('/').map(encodeURIComponent).join('/'),
        ...(tag ? { CopySourceIfMatch: tag } : {}),
      }),
    );
  }

  async readStaged(stage: string, index: number): Promise<Readable | null> {
    return this.getObject(this.key(stagedKey(stage, index)));
  }

  async putStaged(stage: string, index: number, body: Buffer | (() => Readable), size: number): Promise<void> {
    await this.client.send(
      new PutObjectCommand({ Bucket: this.opts.bucket, Key: this.key(stagedKey(stage, index)), Body: Buffer.isBuffer(body) ? body : body(), ContentLength: size }),
    );
  }

  async discardStage(stage: string): Promise<void> {
    const prefix = this.key(`uploads/${stage}/`);
    for (;;) {
      const listed = await this.client.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: prefix, MaxKeys: 1000 }));
      const keys = (listed.Contents ?? []).map((o) => o.Key!).filter(Boolean);
      if (keys.length === 0) return;
      await this.deleteKeys(keys);
    }
  }

  async *listStored(): AsyncIterable<StoredBlob[]> {
    let token: string | undefined;
    do {
      const listed = await this.client.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: this.key('blobs/'), ContinuationToken: token }));
      const page: StoredBlob[] = [];
      for (const o of listed.Contents ?? []) {
        const hash = o.Key?.slice(o.Key.lastIndexOf('/') + 1) ?? '';
        if (HASH_NAME.test(hash) && o.LastModified) page.push({ hash, modifiedAt: o.LastModified });
      }
      if (page.length > 0) yield page;
      token = listed.IsTruncated ? listed.NextContinuationToken : undefined;
    } while (token);
  }

  async put(hash: string, bytes: Buffer): Promise<void> {
    if (await this.has(hash)) return;
    await this.client.send(new PutObjectCommand({ Bucket: this.opts.bucket, Key: this.key(casKey(hash)), Body: bytes, ContentLength: bytes.length }));
  }

  async get(hash: string): Promise<Readable> {
    const body = await this.getObject(this.key(casKey(hash)));
    if (!body) throw new Error(`blob ${hash} is missing from the store`);
    return body;
  }

  read(hash: string): Promise<Buffer> {
    const fetch = async () => {
      const parts: Buffer[] = [];
      for await (const chunk of await this.get(hash)) parts.push(chunk as Buffer);
      return Buffer.concat(parts);
    };
    return this.cache ? this.cache.read(hash, fetch) : fetch();
  }

  async has(hash: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.opts.bucket, Key: this.key(casKey(hash)) }));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async delete(hashes: string[]): Promise<void> {
    await this.deleteKeys(hashes.map((h) => this.key(casKey(h))));
  }

  private async deleteKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.opts.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }));
    }
  }

  private async getObject(key: string): Promise<Readable | null> {
    return (await this.getObjectWithTag(key))?.body ?? null;
  }

  private async getObjectWithTag(key: string): Promise<{ body: Readable; tag: string | undefined } | null> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: key }));
      return { body: res.Body as Readable, tag: res.ETag };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async check(): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.opts.bucket }));
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}
