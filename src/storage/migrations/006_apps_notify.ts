import { sql, type Kysely } from 'kysely';

// Every committed change to an app row raises NOTIFY hl_apps with its organization id, so each
// API process can drop its cached app lookups for that organization (src/core/app-cache.ts)
// whatever code path made the change: update, delete, deletion job, version create or rollback.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create function hl_apps_notify() returns trigger language plpgsql as $$
    begin
      perform pg_notify('hl_apps', coalesce(new.organization_id, old.organization_id));
      return null;
    end
    $$;
    create trigger apps_notify after insert or update or delete on apps
      for each row execute function hl_apps_notify();
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
