import path from 'node:path';
import { ConfigError, type Config } from '../../config.js';
import { BlobCache } from './cache.js';
import type { BlobStore } from './driver.js';
import { LocalBlobStore, type Signer } from './local.js';
import { S3BlobStore, parseS3Url } from './s3.js';

export type { BlobStore, StagedCheck } from './driver.js';
export { HashMismatchError, TooLargeError, INLINE_LIMIT } from './driver.js';
export { LocalBlobStore } from './local.js';
export { S3BlobStore } from './s3.js';

/** The blob store HARNESSLAYER_STORAGE names: `file:<dir>` (default) or `s3://bucket/prefix`. */
export async function openBlobStore(config: Config, signer: Signer): Promise<BlobStore> {
  if (config.storage.startsWith('s3://')) {
    const { bucket, prefix } = parseS3Url(config.storage);
    let cache: BlobCache | undefined;
    if (config.blobCacheBytes > 0) {
      cache = new BlobCache(path.join(config.dataDir, 'blob-cache'), config.blobCacheBytes);
      await cache.init();
    }
    const store = new S3BlobStore({ bucket, prefix, endpoint: config.s3.endpoint, region: config.s3.region }, cache);
    // At start, not at the first upload: a bucket that is missing or refuses our credentials
    // would otherwise pass for files the client forgot to send.
    // (HeadBucket needs s3:ListBucket: credentials limited to objects get a warning only.)
    await store.check().catch(async (err: { name?: string; message?: string; $metadata?: { httpStatusCode?: number } }) => {
      const status = err.$metadata?.httpStatusCode;
      if (status === 403) {
        console.warn(`[storage] the credentials may not look at S3 bucket "${bucket}" (HeadBucket: 403); if uploads fail, check them.`);
        return;
      }
      await store.close();
      const why = status === 404 ? 'it does not exist' : `${err.name ?? 'error'}: ${err.message ?? ''}`.trim();
      throw new ConfigError(`HARNESSLAYER_STORAGE names the S3 bucket "${bucket}", which cannot be used (${why}). Check the bucket name, S3_ENDPOINT, S3_REGION and the AWS credentials.`);
    });
    return store;
  }
  const store = new LocalBlobStore(config.storage.slice('file:'.length), signer, () => config.publicUrl);
  await store.init();
  return store;
}
