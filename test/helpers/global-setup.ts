import fs from 'node:fs/promises';
import pg from 'pg';
import { Queue } from '../../src/jobs/queue.js';
import { migrate, openDatabase } from '../../src/storage/db.js';
import { TEMPLATE_DB, TEMPLATE_DIR, TEST_PG_URL, databaseUrl } from './databases.js';

/** Builds the migrated template (schema + pg-boss) that every test file's database copies. */
export default async function setup(): Promise<void> {
  let url: string | undefined;
  if (TEST_PG_URL) {
    const admin = new pg.Client({ connectionString: TEST_PG_URL });
    await admin.connect();
    try {
      await admin.query(`drop database if exists ${TEMPLATE_DB} with (force)`);
      await admin.query(`create database ${TEMPLATE_DB}`);
    } finally {
      await admin.end();
    }
    url = databaseUrl(TEST_PG_URL, TEMPLATE_DB);
  } else {
    await fs.rm(TEMPLATE_DIR, { recursive: true, force: true });
  }
  const database = await openDatabase({ databaseUrl: url, dataDir: url ? undefined : TEMPLATE_DIR, poolSize: 2 });
  await migrate(database.db);
  const queue = new Queue(database);
  await queue.start();
  await queue.stop();
  await database.close();
}
