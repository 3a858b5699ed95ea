import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { inject } from 'vitest';

/**
 * Which database the suite runs on: PGlite by default; PostgreSQL when
 * HARNESSLAYER_TEST_DATABASE_URL points at a server (CI runs the suite once each way).
 * Each test file gets its own database, cloned from a migrated template.
 */
export const TEST_PG_URL = process.env.HARNESSLAYER_TEST_DATABASE_URL || undefined;
export const TEST_DB_KIND: 'pglite' | 'postgres' = TEST_PG_URL ? 'postgres' : 'pglite';

export function databaseUrl(base: string, name: string): string {
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

export interface TestDatabase {
  databaseUrl?: string;
  dataDir: string;
  drop(): Promise<void>;
}

/** A fresh database for one test file: a copy of the template. */
export async function cloneTemplate(): Promise<TestDatabase> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-test-'));
  if (!TEST_PG_URL) {
    await fs.cp(inject('template').dir, path.join(dataDir, 'db'), { recursive: true });
    return { dataDir, drop: () => fs.rm(dataDir, { recursive: true, force: true }) };
  }
  const name = `harnesslayer_t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  try {
    await admin.query(`create database ${name} template ${inject('template').db}`);
  } finally {
    await admin.end();
  }
  return {
    databaseUrl: databaseUrl(TEST_PG_URL, name),
    dataDir,
    async drop() {
      const c = new pg.Client({ connectionString: TEST_PG_URL });
      await c.connect();
      try {
        await c.query(`drop database if exists ${name} with (force)`);
      } finally {
        await c.end();
      }
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}
