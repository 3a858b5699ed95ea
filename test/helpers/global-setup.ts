import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { Queue } from '../../src/jobs/queue.js';
import { migrate, openDatabase } from '../../src/storage/db.js';
import { TEST_PG_URL, databaseUrl } from './databases.js';

declare module 'vitest' {
  export interface ProvidedContext {
    template: { dir: string; db: string };
  }
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: TEST_PG_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/**
 * Builds the migrated template (schema + pg-boss) that every test file's database copies.
 * Its name is unique to this run, so concurrent runs on one machine never share it.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-template-'));
  const dbName = `harnesslayer_tpl_${process.pid}_${Date.now().toString(36)}`;
  let url: string | undefined;
  if (TEST_PG_URL) {
    await admin((c) => c.query(`create database ${dbName}`));
    url = databaseUrl(TEST_PG_URL, dbName);
  }
  const database = await openDatabase({ databaseUrl: url, dataDir: url ? undefined : path.join(dir, 'db'), poolSize: 2 });
  await migrate(database.db);
  const queue = new Queue(database);
  await queue.start();
  await queue.stop();
  await database.close();
  project.provide('template', { dir: path.join(dir, 'db'), db: dbName });
  return async () => {
    await fs.rm(dir, { recursive: true, force: true });
    if (TEST_PG_URL) await admin((c) => c.query(`drop database if exists ${dbName} with (force)`));
  };
}
