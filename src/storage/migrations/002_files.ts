import { sql, type Kysely } from 'kysely';

// Versioned file storage (see src/storage/README.md). Content is addressed by sha256 hex:
// a blob row per distinct content, a tree per distinct file list (versions), an overlay per
// distinct difference from a base version (states). Identical trees and overlays are
// stored once, so a profile that changed nothing costs one `states` row.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table blobs (
      hash text primary key check (hash ~ '^[0-9a-f]{64}$'),
      size bigint not null,
      -- a copy of small contents (<= 64 KiB), so merges read bytes from the database;
      -- the blob store always holds every blob
      data bytea,
      created_at timestamptz not null default now()
    );

    create table trees (
      hash text primary key,
      file_count integer not null,
      size bigint not null
    );
    create table tree_entries (
      tree_hash text not null references trees(hash) on delete cascade,
      path text not null,
      blob_hash text not null references blobs(hash),
      size bigint not null,
      primary key (tree_hash, path)
    );
    create index tree_entries_blob on tree_entries (blob_hash);

    create table overlays (
      hash text primary key,
      entry_count integer not null
    );
    -- the empty overlay (untouched profiles) always exists: states point at it without a lock
    insert into overlays (hash, entry_count) values ('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 0);
    create table overlay_entries (
      overlay_hash text not null references overlays(hash) on delete cascade,
      path text not null,
      -- null: the path is deleted relative to the base version
      blob_hash text references blobs(hash),
      size bigint,
      primary key (overlay_hash, path)
    );
    -- the sync looks up overlays touching a changed path
    create index overlay_entries_path on overlay_entries (path, overlay_hash);
    create index overlay_entries_blob on overlay_entries (blob_hash);

    create table versions (
      organization_id text not null,
      id text not null,
      app_id text not null,
      number integer not null,
      parent_version_id text,
      tree_hash text not null references trees(hash),
      file_count integer not null,
      size bigint not null,
      created_at timestamptz not null default now(),
      primary key (organization_id, id),
      unique (app_id, number)
    );
    create index versions_tree on versions (tree_hash);

    create table states (
      organization_id text not null,
      id text not null,
      profile_id text not null,
      app_id text not null,
      number integer not null,
      parent_state_id text,
      base_version_id text,
      -- null while materializing (or failed): such a state has no files yet
      overlay_hash text references overlays(hash),
      tree_hash text,
      file_count integer not null default 0,
      size bigint not null default 0,
      source text not null check (source in ('init', 'upload', 'run', 'sync', 'snapshot', 'rollback')),
      status text not null check (status in ('ready', 'materializing', 'failed')),
      error text,
      sandbox_id text,
      created_at timestamptz not null default now(),
      primary key (organization_id, id),
      unique (profile_id, number)
    );
    create index states_app on states (app_id);
    create index states_overlay on states (overlay_hash);
    create index states_base on states (base_version_id);

    create table uploads (
      id text primary key,
      organization_id text not null,
      kind text not null check (kind in ('version', 'state')),
      app_id text not null,
      profile_id text,
      target_id text not null,
      -- [{name, hash (hex), exists}] in request order; the index is the file's URL index
      files jsonb not null,
      expected_head_state_id text,
      expected_head_seq integer,
      status text not null check (status in ('open', 'registered')),
      registered_id text,
      expires_at timestamptz not null,
      created_at timestamptz not null default now()
    );
    -- one open upload per caller-chosen id (expired ones are removed before reuse)
    create unique index uploads_target on uploads (organization_id, kind, target_id);
    create index uploads_app on uploads (app_id);
    create index uploads_profile on uploads (profile_id);
    create index uploads_expiry on uploads (expires_at);

    create table rollbacks (
      id text primary key,
      organization_id text not null,
      app_id text not null,
      profile_id text,
      kind text not null check (kind in ('version', 'state')),
      from_id text,
      to_id text not null,
      reason text,
      created_at timestamptz not null default now()
    );
    create index rollbacks_app on rollbacks (app_id);
    create index rollbacks_profile on rollbacks (profile_id);
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
