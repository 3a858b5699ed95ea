import { sql, type Kysely } from 'kysely';

// Outbound deliveries and inbound iMessages (src/channels/README.md). Each row is the truth a
// job reads: an attempt counts only once it is recorded here, so a job run twice (a worker
// died mid-attempt) never repeats an attempt that already got its 2xx.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- One event for one receiver: a profile.created webhook or an api channel's webhook.
    create table webhook_deliveries (
      id text primary key,
      organization_id text not null,
      webhook_id text references webhooks(id) on delete cascade,
      channel_id text references channels(id) on delete cascade,
      event text not null,
      -- the JSON body exactly as first built (text: jsonb would reorder keys, and the
      -- CamelCasePlugin would rename keys inside it); every attempt sends these bytes
      body text not null,
      status text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
      attempts integer not null default 0,
      last_status integer,
      last_error text,
      created_at timestamptz not null default now(),
      delivered_at timestamptz,
      check ((webhook_id is null) <> (channel_id is null))
    );
    create index webhook_deliveries_webhook on webhook_deliveries (webhook_id) where webhook_id is not null;
    create index webhook_deliveries_channel on webhook_deliveries (channel_id) where channel_id is not null;

    -- An inbound Sendblue message, remembered by its message_handle (duplicates run once),
    -- and the progress of its reply (parts sent: a retried reply resumes, never repeats).
    create table sendblue_messages (
      channel_id text not null references channels(id) on delete cascade,
      message_handle text not null,
      organization_id text not null,
      from_number text not null,
      group_id text,
      content text,
      media_urls text,
      status text not null default 'received'
        check (status in ('received', 'running', 'replying', 'replied', 'no_reply', 'failed')),
      instance_id text,
      reply_text text,
      reply_parts_sent integer not null default 0,
      reply_attempts integer not null default 0,
      replied_at timestamptz,
      error text,
      created_at timestamptz not null default now(),
      primary key (channel_id, message_handle)
    );
    create index sendblue_messages_instance on sendblue_messages (instance_id) where instance_id is not null;
    create index sendblue_messages_created on sendblue_messages (created_at);
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
