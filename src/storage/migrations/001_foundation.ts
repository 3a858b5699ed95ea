import { sql, type Kysely } from 'kysely';

// Plain records: owners, keys, organizations, apps and what hangs off them, and the
// tables later work fills (instances, syncs, conflicts, history) so their read endpoints
// exist from the start. Columns are snake_case; code sees camelCase (CamelCasePlugin).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table users (
      id text primary key,
      email text unique,
      created_at timestamptz not null default now()
    );

    create table api_keys (
      key_hash text primary key,
      kind text not null check (kind in ('user', 'organization')),
      user_id text references users(id) on delete cascade,
      organization_id text,
      last4 text not null,
      created_at timestamptz not null default now()
    );
    create index api_keys_org on api_keys (organization_id);

    create table organizations (
      id text primary key,
      slug text not null unique,
      name text not null,
      owner_user_id text not null references users(id),
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );

    create table apps (
      id text primary key,
      organization_id text not null references organizations(id),
      slug text not null,
      name text not null,
      type text not null check (type in ('claude', 'openclaw')),
      head_version_id text,
      default_access_group_id text,
      credentials text,
      status text not null default 'active' check (status in ('active', 'deleting')),
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    -- A deleting app frees its slug at once: only active apps are unique.
    create unique index apps_org_slug on apps (organization_id, slug) where status = 'active';
    create index apps_org_created on apps (organization_id, created_at desc, id desc);

    create table access_groups (
      id text primary key,
      organization_id text not null,
      app_id text not null references apps(id) on delete cascade,
      name text not null,
      "limit" integer,
      limit_reset text not null check (limit_reset in ('daily', 'monthly', 'yearly')),
      limit_message text,
      is_default boolean not null default false,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create index access_groups_app on access_groups (app_id, created_at desc, id desc);

    create table channels (
      id text primary key,
      organization_id text not null,
      app_id text not null references apps(id) on delete cascade,
      slug text not null,
      name text not null,
      type text not null check (type in ('api', 'imessage')),
      webhook text,
      data text,
      inbound_token text unique,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      unique (app_id, slug)
    );
    create index channels_app on channels (app_id, created_at desc, id desc);

    create table profiles (
      id text primary key,
      organization_id text not null,
      app_id text not null references apps(id) on delete cascade,
      identifier text not null,
      access_group_id text not null,
      metadata jsonb,
      head_state_id text,
      base_version_id text,
      -- compare-and-set counter: every head move bumps it
      head_seq integer not null default 0,
      status text not null default 'active' check (status in ('active', 'deleting')),
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create unique index profiles_app_identifier on profiles (app_id, identifier) where status = 'active';
    create index profiles_app_created on profiles (app_id, created_at desc, id desc);
    create index profiles_group on profiles (access_group_id);

    -- Runs per profile and calendar period. A run bumps its daily, monthly and yearly row
    -- in one statement, so a group that changes its reset policy reads the right count.
    create table usage_counters (
      profile_id text not null references profiles(id) on delete cascade,
      period text not null check (period in ('daily', 'monthly', 'yearly')),
      period_start timestamptz not null,
      used integer not null default 0,
      primary key (profile_id, period, period_start)
    );

    create table sessions (
      id text not null,
      organization_id text not null,
      app_id text not null references apps(id) on delete cascade,
      type text not null check (type in ('single', 'group')),
      profile_id text,
      last_instance_id text,
      turns integer not null default 0,
      created_at timestamptz not null default now(),
      last_active_at timestamptz not null default now(),
      primary key (organization_id, id)
    );
    create index sessions_app on sessions (app_id, created_at desc, id desc);

    create table webhooks (
      id text primary key,
      organization_id text not null,
      app_id text not null references apps(id) on delete cascade,
      event text not null,
      method text not null,
      url text not null,
      headers text,
      secret text not null,
      run_count integer not null default 0,
      last_triggered_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create index webhooks_app on webhooks (app_id, created_at desc, id desc);

    create table instances (
      id text primary key,
      organization_id text not null,
      app_id text not null references apps(id) on delete cascade,
      channel_id text,
      session_id text,
      profile_id text,
      user_id text,
      status text not null,
      input text,
      output text,
      error text,
      input_tokens integer not null default 0,
      output_tokens integer not null default 0,
      cost_usd double precision not null default 0,
      state_id text,
      created_at timestamptz not null default now(),
      started_at timestamptz,
      completed_at timestamptz
    );
    create index instances_app on instances (app_id, created_at desc, id desc);

    create table syncs (
      id text primary key,
      organization_id text not null,
      app_id text not null references apps(id) on delete cascade,
      version_id text not null,
      strategy text not null,
      status text not null,
      total integer not null default 0,
      processed integer not null default 0,
      updated integer not null default 0,
      unchanged integer not null default 0,
      conflicted integer not null default 0,
      failed integer not null default 0,
      created_at timestamptz not null default now(),
      started_at timestamptz,
      completed_at timestamptz
    );
    create index syncs_app on syncs (app_id, created_at desc, id desc);

    create table conflicts (
      id text primary key,
      organization_id text not null,
      app_id text not null references apps(id) on delete cascade,
      profile_id text not null,
      sync_id text not null,
      path text not null,
      kind text not null,
      strategy text not null,
      status text not null,
      resolution text,
      base_hash text,
      current_hash text,
      incoming_hash text,
      result_hash text,
      created_at timestamptz not null default now()
    );
    create index conflicts_app on conflicts (app_id, created_at desc, id desc);
    create index conflicts_profile on conflicts (profile_id, status);

    create table history (
      id text primary key,
      organization_id text not null,
      app_id text not null references apps(id) on delete cascade,
      instance_id text,
      channel_id text,
      session_id text,
      profile_id text,
      user_id text,
      status text not null,
      input text,
      output text,
      input_tokens integer not null default 0,
      output_tokens integer not null default 0,
      cost_usd double precision not null default 0,
      created_at timestamptz not null default now()
    );
    create index history_app on history (app_id, created_at desc, id desc);

    create table idempotency_keys (
      key_hash text not null,
      method text not null,
      path text not null,
      idempotency_key text not null,
      body_hash text not null,
      status_code integer,
      response jsonb,
      created_at timestamptz not null default now(),
      primary key (key_hash, method, path, idempotency_key)
    );

    create table settings (
      key text primary key,
      value text not null
    );
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
