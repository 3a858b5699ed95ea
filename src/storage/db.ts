import fs from 'node:fs/promises';
import { PGlite, types } from '@electric-sql/pglite';
import { CamelCasePlugin, Kysely, Migrator, PostgresDialect, type Transaction } from 'kysely';
import pg from 'pg';
import { migrationProvider } from './migrations/index.js';
import { PgliteDialect, PgliteMutex } from './pglite-dialect.js';
import type { DB } from './schema.js';

export type Db = Kysely<DB>;
export type Tx = Transaction<DB>;

/** The database handle: Kysely plus what the queue and the listeners need underneath. */
export interface Database {
  kind: 'pglite' | 'postgres';
  db: Db;
  /** Runs raw SQL for pg-boss on the same database (PGlite: through the same mutex). */
  executeSql(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
  connectionString: string | undefined;
  pglite: PGlite | undefined;
  /**
   * PGlite: LISTENs on `channel` (through the same mutex); a NOTIFY arrives once its
   * transaction commits. PostgreSQL has none: the EventHub holds its own LISTEN connection.
   */
  listen?(channel: string, onPayload: (payload: string) => void): Promise<void>;
  close(): Promise<void>;
}

// pg hands int8/numeric back as strings; we only store counters and sizes well below 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

export async function openDatabase(opts: { databaseUrl?: string; dataDir?: string; poolSize?: number }): Promise<Database> {
  if (opts.databaseUrl) {
    const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: opts.poolSize ?? 10 });
    // An idle client that errors (server restart) must not crash the process.
    pool.on('error', () => {});
    const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }), plugins: [new CamelCasePlugin({ maintainNestedObjectKeys: true })] });
    return {
      kind: 'postgres',
      db,
      connectionString: opts.databaseUrl,
      pglite: undefined,
      async executeSql(text, values) {
        return pool.query(text, values as unknown[]);
      },
      async close() {
        await db.destroy();
      },
    };
  }
  let dataDir: string | undefined;
  let unlock = async () => {};
  if (opts.dataDir) {
    dataDir = opts.dataDir;
    await fs.mkdir(dataDir, { recursive: true });
    unlock = await lockEmbedded(dataDir);
  }
  const pglite = new PGlite(dataDir, { serializers: { [types.BYTEA]: byteaToText }, parsers: { [types.BYTEA]: byteaFromText } });
  await pglite.waitReady.catch(async (err: unknown) => {
    await unlock();
    throw err;
  });
  const mutex = new PgliteMutex();
  const db = new Kysely<DB>({ dialect: new PgliteDialect(pglite, mutex), plugins: [new CamelCasePlugin({ maintainNestedObjectKeys: true })] });
  return {
    kind: 'pglite',
    db,
    connectionString: undefined,
    pglite,
    executeSql(text, values) {
      return mutex.run(async () => {
        if (values && values.length > 0) return pglite.query(text, values as unknown[]);
        const results = await pglite.exec(text);
        return results.at(-1) ?? { rows: [] };
      });
    },
    async listen(channel, onPayload) {
      await mutex.run(() => pglite.listen(channel, onPayload));
    },
    async close() {
      await db.destroy();
      await mutex.run(() => pglite.close());
      await unlock();
    },
  };
}

/**
 * PGlite is one process's database: a second process opening the same files (a second
 * `serve`, or `user create` while one runs) would write over the first's, and what it wrote
 * could be lost or the files corrupted. `<dir>.lock` holds the pid of the process that has
 * it open; a lock whose process is gone (a crash), or that names this process, is taken over.
 * Returns the release.
 */
async function lockEmbedded(dir: string): Promise<() => Promise<void>> {
  const lock = `${dir}.lock`;
  for (;;) {
    try {
      await fs.writeFile(lock, String(process.pid), { flag: 'wx' });
      return () => fs.rm(lock, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number(await fs.readFile(lock, 'utf8').catch(() => ''));
    // Our own pid is a lock left by an earlier run that had it too: a container restarted
    // after a crash runs as pid 1 again. This process never opens the database twice.
    if (pid > 0 && pid !== process.pid && processAlive(pid)) {
      throw new Error(
        `The embedded database in ${dir} is in use by process ${pid} (likely a running \`harnesslayer serve\`); it serves one process at a time. Stop that process first, or use PostgreSQL (DATABASE_URL) to share a database. If no such process runs, remove ${lock}.`,
      );
    }
    await fs.rm(lock, { force: true }); // left by a process that is gone: take it over
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/*
 * PGlite's own bytea codec converts byte by byte in JavaScript (about 1 s for the 8 MB of inline
 * contents of a 1,000-file upload); Buffer's hex codec is native.
 */
function byteaToText(value: unknown): string {
  if (!(value instanceof Uint8Array)) throw new TypeError('bytea parameters must be a Buffer or Uint8Array');
  return `\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;
}

function byteaFromText(text: string): Buffer {
  return Buffer.from(text.slice(2), 'hex');
}

export async function migrate(db: Db): Promise<void> {
  const migrator = new Migrator({ db, provider: migrationProvider, migrationTableName: 'hl_migrations', migrationLockTableName: 'hl_migrations_lock' });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    const why = String((error as Error)?.message ?? error);
    // No migration ran: the database could not be reached (or its lock table written).
    throw new Error(failed ? `database migration ${failed.migrationName} failed: ${why}` : `cannot use the database: ${why}`);
  }
}
