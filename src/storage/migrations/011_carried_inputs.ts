import { sql, type Kysely } from 'kysely';

// The inputs of a session's turns that were stopped before the model saw them (stopped while
// queued, or before the runtime delivered them), oldest first. The session's next turn that
// reaches the model carries them in its prompt and removes them (CONTRACT §9: a stopped turn
// stays in the conversation).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table sessions add column carried_inputs text[] not null default '{}'`.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
