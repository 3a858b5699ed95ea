import { EventEmitter } from 'node:events';
import { sql } from 'kysely';
import pg from 'pg';
import type { Ctx } from './context.js';
import { NotFoundError } from './errors.js';
import { findInstance } from './records.js';
import { isDoneEvent, isFinalStatus, type RuntimeEvent } from '../runtime/events.js';
import type { Database, Db, Tx } from '../storage/db.js';
import type { StoredEvent } from '../storage/schema.js';

/**
 * Instance events: stored durably with gap-free `seq` (the events table is the truth), and
 * the wake-ups that let long-polls, SSE streams and workers react within milliseconds.
 *
 * Signals carry only an id. On PostgreSQL they are NOTIFYs raised inside the writing
 * transaction (delivered at commit, to every process: each holds one LISTEN connection);
 * on PGlite, which serves one process, they are emitted in-process after the commit.
 */

/**
 * `events`: an instance has new events (payload: instance id); `stop`: stop it; `apps`: an
 * organization's app rows changed (payload: organization id; raised by a trigger on
 * PostgreSQL, see src/core/app-cache.ts); `jobs`: a job was queued (payload: its name; a
 * NOTIFY that `Queue.send` raises in the sending transaction, on both databases).
 */
export type SignalChannel = 'events' | 'stop' | 'apps' | 'jobs';
export type Signal = (channel: SignalChannel, payload: string) => Promise<void>;

export const PG_CHANNELS: Record<SignalChannel, string> = { events: 'hl_events', stop: 'hl_stop', apps: 'hl_apps', jobs: 'hl_jobs' };
const FROM_PG = new Map(Object.entries(PG_CHANNELS).map(([k, v]) => [v, k as SignalChannel]));
const RECONNECT_MS = 500;

export class EventHub {
  private readonly emitter = new EventEmitter().setMaxListeners(0);
  private client: pg.Client | undefined;
  private closed = false;
  private connections = 0;

  constructor(private readonly database: Database) {}

  /** Opens the LISTEN connection (PostgreSQL); on PGlite, LISTENs for the queue's NOTIFYs. */
  async start(): Promise<void> {
    if (this.database.kind === 'postgres') await this.connect();
    else await this.database.listen?.(PG_CHANNELS.jobs, (payload) => this.emit('jobs', payload));
  }

  async close(): Promise<void> {
    this.closed = true;
    // Long-polls and streams answer with what they have instead of holding the shutdown.
    this.emitter.emit('wake-all');
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * The LISTEN connection signals arrive through: a new value at each (re)connect, undefined
   * while there is none (PGlite: always 0, its signals are in-process). Signals raised in
   * between are lost, so state kept fresh by signals is valid only within one session.
   */
  get session(): number | undefined {
    if (this.database.kind !== 'postgres') return 0;
    return this.client ? this.connections : undefined;
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.database.connectionString });
    client.on('notification', (n) => {
      const channel = FROM_PG.get(n.channel);
      if (channel) this.emit(channel, n.payload ?? '');
    });
    const lost = () => {
      if (this.client !== client) return;
      this.client = undefined;
      client.end().catch(() => {});
      this.reconnectLater();
    };
    client.on('error', lost);
    client.on('end', lost);
    await client.connect();
    await client.query(Object.values(PG_CHANNELS).map((c) => `listen ${c}`).join('; '));
    if (this.closed) return void (await client.end());
    this.client = client;
    this.connections++;
    // Signals raised while nobody listened are lost: everyone waiting re-reads the tables.
    this.emitter.emit('wake-all');
  }

  private reconnectLater(): void {
    if (this.closed) return;
    setTimeout(() => this.connect().catch(() => this.reconnectLater()), RECONNECT_MS).unref();
  }

  private emit(channel: SignalChannel, payload: string): void {
    this.emitter.emit(`${channel}:${payload}`);
    this.emitter.emit(channel, payload);
  }

  /** Every signal on `channel` (e.g. `stop` for the workers, `jobs` for the queue). */
  on(channel: SignalChannel, listener: (payload: string) => void): () => void {
    this.emitter.on(channel, listener);
    return () => this.emitter.off(channel, listener);
  }

  /** Runs `fn` in a transaction; the signals it raises reach every process once it commits. */
  async transaction<T>(fn: (tx: Tx, signal: Signal) => Promise<T>): Promise<T> {
    const local: [SignalChannel, string][] = [];
    const pgNotify = this.database.kind === 'postgres';
    const result = await this.database.db.transaction().execute((tx) =>
      fn(tx, async (channel, payload) => {
        if (pgNotify) await sql`select pg_notify(${PG_CHANNELS[channel]}, ${payload})`.execute(tx);
        else local.push([channel, payload]);
      }),
    );
    for (const [channel, payload] of local) this.emit(channel, payload);
    return result;
  }

  /**
   * Watches one key (`events` of an instance) from now on: a signal that arrives between
   * creating the watch and calling `wait` is not lost, so read after watching, then wait.
   */
  watch(channel: SignalChannel, payload: string): Watch {
    return new Watch(this.emitter, `${channel}:${payload}`, () => this.closed);
  }
}

export class Watch {
  private fired = false;
  private wake: (() => void) | undefined;
  private readonly fire = () => {
    this.fired = true;
    this.wake?.();
  };

  constructor(
    private readonly emitter: EventEmitter,
    private readonly key: string,
    private readonly closed: () => boolean,
  ) {
    emitter.on(key, this.fire);
    emitter.on('wake-all', this.fire);
  }

  /** Resolves at the next signal (or at once if one came since the last wait), or after `ms`. */
  async wait(ms: number, abort?: AbortSignal): Promise<void> {
    if (!this.fired && !this.closed() && !abort?.aborted && ms > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, ms);
        function done() {
          clearTimeout(timer);
          abort?.removeEventListener('abort', done);
          resolve();
        }
        this.wake = done;
        abort?.addEventListener('abort', done, { once: true });
      });
    }
    this.wake = undefined;
    this.fired = false;
  }

  close(): void {
    this.emitter.off(this.key, this.fire);
    this.emitter.off('wake-all', this.fire);
    this.wake?.();
  }
}

export interface EventView {
  seq: number;
  type: string;
  data: Record<string, unknown>;
  done: boolean;
  createdAt: string;
}

export function eventView(e: StoredEvent): EventView {
  return { seq: e.seq, type: e.type, data: e.data as Record<string, unknown>, done: e.done, createdAt: e.createdAt.toISOString() };
}

export const MAX_EVENTS_PER_READ = 1000;

/**
 * PostgreSQL stores no NUL character, in text or in jsonb, and a turn's text can hold one (a
 * tool's output of `printf 'x\0y'`, a model's reply): its events, and the turn's end, would
 * fail to record. Stored text has each NUL as U+FFFD, the replacement character.
 */
export function withoutNul(text: string): string;
export function withoutNul(text: string | null): string | null;
export function withoutNul(text: string | null): string | null {
  return text?.includes('\0') ? text.replaceAll('\0', '\uFFFD') : text;
}

/** An event's data as stored: JSON, with each NUL (`\u0000`, not an escaped backslash before `u0000`) as U+FFFD. */
export function eventJson(data: unknown): string {
  return JSON.stringify(data).replace(/(?<!\\)((?:\\\\)*)\\u0000/g, '$1\\ufffd');
}

/**
 * Appends events with the next seqs. The seq counter lives on the instance row, so the
 * update that takes it also locks the row: concurrent writers get consecutive, gap-free
 * ranges. Returns the seqs given. With `guard`, only while that worker still runs the
 * instance (null otherwise: the instance was reaped or ended, and the events are dropped).
 */
export async function appendEvents(
  tx: Tx,
  signal: Signal,
  instanceId: string,
  events: (RuntimeEvent & { createdAt?: Date })[],
  guard?: { workerId: string },
): Promise<number[] | null> {
  if (events.length === 0) return [];
  let q = tx.updateTable('instances').set({ lastSeq: sql`last_seq + ${events.length}` }).where('id', '=', instanceId);
  if (guard) q = q.where('status', '=', 'running').where('workerId', '=', guard.workerId);
  const row = await q.returning('lastSeq').executeTakeFirst();
  if (!row) return null;
  const first = row.lastSeq - events.length + 1;
  const stored = await tx
    .insertInto('events')
    .values(
      events.map((e, i) => ({
        instanceId,
        seq: first + i,
        type: e.type,
        data: eventJson(e.data),
        done: isDoneEvent(e),
        ...(e.createdAt ? { createdAt: e.createdAt } : {}),
      })),
    )
    .returning('seq')
    .execute();
  await signal('events', instanceId);
  return stored.map((e) => e.seq);
}


/**
 * A running turn's events, appended by the worker `workerId` that holds the instance; false
 * when it no longer does (the events are dropped). On PostgreSQL this is one statement, one
 * round trip: seq range, rows and NOTIFY together, committed without waiting for the WAL
 * flush (a database crash can lose only the newest batches, whole and in order, so seqs stay
 * gap-free; the instance's final transaction commits durably).
 */
export async function appendTurnEvents(ctx: Ctx, instanceId: string, events: (RuntimeEvent & { createdAt: Date })[], workerId: string): Promise<boolean> {
  if (events.length === 0) return true;
  if (ctx.database.kind !== 'postgres') {
    const seqs = await ctx.events.transaction((tx, signal) => appendEvents(tx, signal, instanceId, events, { workerId }));
    return seqs !== null;
  }
  const n = events.length;
  const { rows } = await sql<{ held: boolean }>`
    with taken as (
      update instances set last_seq = last_seq + ${n}
       where id = ${instanceId} and status = 'running' and worker_id = ${workerId}
      returning last_seq
    ), stored as (
      insert into events (instance_id, seq, type, data, done, created_at)
      select ${instanceId}, t.last_seq - ${n} + x.ord::int, x.type, x.data::jsonb, x.type = 'result', x.created_at
        from taken t,
             unnest(${events.map((e) => e.type)}::text[], ${events.map((e) => eventJson(e.data))}::text[], ${events.map((e) => e.createdAt)}::timestamptz[])
               with ordinality as x(type, data, created_at, ord)
      returning seq
    )
    select exists (select 1 from taken) as held,
           (select count(*) from stored) as stored,
           case when exists (select 1 from taken) then pg_notify(${PG_CHANNELS.events}, ${instanceId}) end as notified,
           set_config('synchronous_commit', 'off', true) as async_commit`.execute(ctx.db);
  return rows[0]?.held === true;
}

/**
 * The instance's status and the events after `after`, in one statement: one snapshot, so a
 * final status comes with every event before it (and one round trip for a woken poll).
 */
/** Seqs are 32-bit integers: a cursor past that reads as the highest (there are no events after it). */
const MAX_SEQ = 2_147_483_647;

export async function readPage(db: Db, instanceId: string, afterSeq: number): Promise<{ status: string; lastSeq: number; events: StoredEvent[] } | null> {
  const after = Math.min(afterSeq, MAX_SEQ);
  const { rows } = await sql<{ status: string; lastSeq: number; seq: number | null; type: string; done: boolean; createdAt: Date; dataText: string }>`
    select i.status, i.last_seq, e.seq, e.type, e.done, e.created_at, e.data::text as data_text
      from instances i
      left join lateral (
        select seq, type, done, created_at, data from events
         where instance_id = i.id and seq > ${after} order by seq limit ${MAX_EVENTS_PER_READ}
      ) e on true
     where i.id = ${instanceId}
     order by e.seq`.execute(db);
  if (rows.length === 0) return null;
  const events = rows.filter((r) => r.seq !== null).map((r) => parsed({ instanceId, seq: r.seq!, type: r.type, done: r.done, createdAt: r.createdAt, dataText: r.dataText }));
  return { status: rows[0].status, lastSeq: rows[0].lastSeq, events };
}

// `data` is read as text: CamelCasePlugin would rename the keys inside a jsonb value
// (a tool call's `file_path`), and event data is the runtime's, verbatim.
function parsed({ dataText, ...e }: { instanceId: string; seq: number; type: string; done: boolean; createdAt: Date; dataText: string }): StoredEvent {
  return { ...e, data: JSON.parse(dataText) };
}

export const DEFAULT_POLL_MS = 25_000;
export const MAX_POLL_MS = 60_000;

export interface PollResult {
  instanceId: string;
  status: string;
  events: EventView[];
  cursor: number;
  done: boolean;
}

/**
 * One poll (CONTRACT §6, §9): answers at once when events after `after` exist or the
 * instance has ended; otherwise waits up to `timeoutMs` for the next event.
 */
export async function pollEvents(
  ctx: Ctx,
  organizationId: string,
  instanceId: string,
  opts: { after: number; timeoutMs?: number; abort?: AbortSignal },
): Promise<PollResult> {
  const instance = await findInstance(ctx.db, organizationId, instanceId);
  const timeoutMs = Math.min(MAX_POLL_MS, Math.max(0, opts.timeoutMs ?? DEFAULT_POLL_MS));
  const deadline = Date.now() + timeoutMs;
  const watch = ctx.events.watch('events', instance.id);
  try {
    for (;;) {
      const page = await readPage(ctx.db, instance.id, opts.after);
      if (!page) throw new NotFoundError('instance', instanceId); // its app was deleted meanwhile
      const ended = isFinalStatus(page.status);
      const waited = Date.now() >= deadline || opts.abort?.aborted || ctx.events.isClosed;
      if (page.events.length > 0 || ended || waited) {
        const cursor = page.events.at(-1)?.seq ?? opts.after;
        return { instanceId: instance.id, status: page.status, events: page.events.map(eventView), cursor, done: ended && cursor >= page.lastSeq };
      }
      await watch.wait(deadline - Date.now(), opts.abort);
    }
  } finally {
    watch.close();
  }
}
