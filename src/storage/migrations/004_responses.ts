import { sql, type Kysely } from 'kysely';

// Response runs (src/runtime/README.md, "Runs"): the durable event log every poller and SSE
// stream reads, what a worker needs to claim and lease an instance, and the session
// transcripts that let `resume` continue a conversation on any worker after any restart.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- arrival order of runs: one session's runs execute in this order
    create sequence instance_run_order;

    alter table instances add column run_order bigint not null default nextval('instance_run_order');
    -- the run's images ([{mediaType, data}] or [{url}]) until it ends
    alter table instances add column images jsonb;
    -- the highest event seq written: events get seq = last_seq + 1, ... under the row lock
    alter table instances add column last_seq integer not null default 0;
    -- the worker that runs it, and until when its claim holds without a renewal
    alter table instances add column worker_id text;
    alter table instances add column lease_until timestamptz;
    alter table instances add column attempt integer not null default 0;
    alter table instances add column stop_requested boolean not null default false;
    -- when a run-instance job was last sent for it (the reaper re-sends lost ones)
    alter table instances add column enqueued_at timestamptz;

    create index instances_session_open on instances (organization_id, session_id, run_order)
      where status in ('queued', 'running');
    create index instances_lease on instances (lease_until) where status = 'running';
    create index instances_queued on instances (enqueued_at) where status = 'queued';

    create table events (
      instance_id text not null references instances(id) on delete cascade,
      seq integer not null,
      type text not null,
      data jsonb not null,
      done boolean not null default false,
      created_at timestamptz not null default now(),
      primary key (instance_id, seq)
    );

    -- Claude Code's transcript of a session (gzipped JSONL, opaque): the whole conversation
    -- state, so the next turn resumes on whichever worker runs it.
    create table session_transcripts (
      organization_id text not null,
      session_id text not null,
      sdk_session_id text not null,
      transcript bytea not null,
      updated_at timestamptz not null default now(),
      primary key (organization_id, session_id),
      foreign key (organization_id, session_id) references sessions (organization_id, id) on delete cascade
    );
  `.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('migrations are forward-only');
}
