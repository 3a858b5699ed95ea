import { sql, type Kysely } from 'kysely';

// Version sync bookkeeping. A sync snapshots its scope into sync_items when it starts; each
// batch marks its items in the transaction that commits their states, so a crashed worker's
// successor resumes exactly where it stopped and no profile is merged twice.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table syncs add column profile_ids jsonb;
    alter table syncs add column error text;
    create index syncs_app_status on syncs (app_id, status, created_at);

    create table sync_items (
      sync_id text not null references syncs(id) on delete cascade,
      profile_id text not null,
      -- null while pending; then updated | unchanged | failed
      outcome text check (outcome in ('updated', 'unchanged', 'failed')),
      conflicted boolean not null default false,
      error text,
      primary key (sync_id, profile_id)
    );
    create index sync_items_pending on sync_items (sync_id, profile_id) where outcome is null;
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
