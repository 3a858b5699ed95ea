import { sql, type Kysely } from 'kysely';

// A version or state registered from an upload names that upload. Upload rows leave 24 h
// after they were opened; a `complete` repeated after that finds the version or state by
// the upload id in its path, and an id that never registered anything stays a 404.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table versions add column upload_id text;
    alter table states add column upload_id text;
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
