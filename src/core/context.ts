import type { Config } from '../config.js';
import type { Queue } from '../jobs/queue.js';
import type { BlobStore } from '../storage/blobs/driver.js';
import type { Database, Db } from '../storage/db.js';
import type { EventHub } from './events.js';
import type { Secrets } from './secrets.js';

/** What every core function receives: never a request, never Fastify. */
export interface Ctx {
  config: Config;
  database: Database;
  db: Db;
  secrets: Secrets;
  queue: Queue;
  /** Blob bytes (versions, states, uploads): local directory or S3. */
  blobs: BlobStore;
  /** Cross-process wake-ups for instance events, stops and queued runs. */
  events: EventHub;
  now(): Date;
}
