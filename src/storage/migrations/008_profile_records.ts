import { sql, type Kysely } from 'kysely';

// Deleting a profile removes its turns and their records (core/runs.ts, purgeProfileRuns);
// `history/list?profileId=` reads them too. Both look rows up by profile.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create index instances_profile on instances (profile_id);
    create index history_profile on history (profile_id);
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
