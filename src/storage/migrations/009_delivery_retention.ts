import { sql, type Kysely } from 'kysely';

// Webhook deliveries carry what they announce (a profile, a turn's input and output): they
// name their profile, so deleting the profile deletes them (core/profiles.ts, purgeProfile),
// and ended ones leave after a week (channels/deliveries.ts). Idempotency keys leave once
// past their 24 h (jobs/maintenance.ts). Each sweep reads by age.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table webhook_deliveries add column profile_id text;
    create index webhook_deliveries_profile on webhook_deliveries (profile_id) where profile_id is not null;
    create index webhook_deliveries_ended on webhook_deliveries (created_at) where status <> 'pending';
    create index idempotency_keys_created on idempotency_keys (created_at);
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
