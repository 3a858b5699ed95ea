import { sql, type Kysely } from 'kysely';

// A profile row is rewritten whenever its head moves (runs, uploads, every version sync), and
// a sync moves the heads of whole pages of profiles in one transaction. With half of each page
// left free, every row of a page can take its new version on the same page: a HOT update,
// which writes no index entries. The setting applies to pages written from now on.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table profiles set (fillfactor = 50)`.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
