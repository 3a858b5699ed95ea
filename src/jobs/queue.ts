import { CompiledQuery } from 'kysely';
import PgBoss from 'pg-boss';
import { PG_CHANNELS } from '../core/events.js';
import type { Database, Tx } from '../storage/db.js';

/**
 * The job catalog: every background job's name and its pg-boss options, in one place.
 * Handlers live next to the domain they serve and are registered by `registerWorkers`.
 */
export const JOBS = {
  'delete-app': { retryLimit: 10, retryDelay: 5, retryBackoff: true },
  'delete-profile': { retryLimit: 10, retryDelay: 5, retryBackoff: true },
  // The jobs below end what they serve themselves once earlier attempts all died or failed
  // (the state `failed`, the sync's profiles `failed`: see their `attempt` checks), before the
  // queue runs out of retries and leaves it materializing or running for good.
  'materialize-snapshot': { retryLimit: 5, retryDelay: 5, retryBackoff: true },
  // A sync's range jobs are idempotent (items are claimed with SKIP LOCKED and marked in the
  // committing transaction), so a job whose worker died is simply run again once it expires.
  'sync-start': { retryLimit: 8, retryDelay: 2, retryBackoff: true },
  'sync-range': { retryLimit: 8, retryDelay: 2, retryBackoff: true },
  // Never retried by the queue: a turn is not idempotent. The instance row is the truth; the
  // run reaper fails instances whose worker died and re-sends jobs for queued ones.
  'run-instance': { retryLimit: 0 },
  // Outbound deliveries and iMessages (src/channels). Failed HTTP attempts are rescheduled by
  // the handlers themselves (a new job per attempt, startAfter = the exact backoff); the
  // queue's own retries only cover a worker that died or a database error mid-job.
  'deliver-webhook': { retryLimit: 5, retryDelay: 5, retryBackoff: true },
  'sendblue-inbound': { retryLimit: 5, retryDelay: 5, retryBackoff: true },
  'sendblue-reply': { retryLimit: 5, retryDelay: 5, retryBackoff: true },
} satisfies Record<string, PgBoss.Queue extends infer Q ? Omit<Q & object, 'name'> : never>;

export type JobName = keyof typeof JOBS;

/** How long after a scheduled job's time its workers are woken: it must be due by then. */
const DUE_MARGIN_MS = 20;
/** `attempt`: 1 for a job's first run, n when n − 1 runs before it died or failed. */
export type JobHandler = (data: Record<string, unknown>, job: { attempt: number }) => Promise<void>;

export class Queue {
  readonly boss: PgBoss;
  private started = false;
  /** This process's pg-boss worker ids per job, so `wake` can make them fetch at once. */
  private readonly workerIds = new Map<string, string[]>();
  /** Wake-ups of scheduled jobs (`wakeAt`), cleared on stop. */
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly database: Database,
    private readonly opts: { leaseSeconds?: number; maintenanceIntervalSeconds?: number } = {},
  ) {
    const common = {
      schema: 'pgboss',
      supervise: true,
      schedule: false,
      migrate: true,
      // How soon a job whose worker died is noticed and retried.
      maintenanceIntervalSeconds: opts.maintenanceIntervalSeconds ?? 30,
    } as const;
    this.boss =
      database.kind === 'postgres'
        ? new PgBoss({ ...common, connectionString: database.connectionString, max: 4 })
        : new PgBoss({ ...common, db: { executeSql: (text, values) => database.executeSql(text, values) } });
    // pg-boss reports maintenance and worker errors here; without a listener they would throw.
    this.boss.on('error', (err) => console.error('[queue]', err.message));
  }

  async start(): Promise<void> {
    await this.boss.start();
    for (const [name, options] of Object.entries(JOBS)) await this.ensureQueue(name, options);
    if (this.database.kind === 'pglite') await this.takeUpOrphans();
    this.started = true;
  }

  /**
   * The embedded database serves one process at a time, so a job still active when it starts
   * was held by the process before, which is gone (killed, or its machine lost power). Its
   * lease is over now: pg-boss retries it as it would once the lease ran out (or fails it,
   * past its retries), instead of leaving it for up to `leaseSeconds`. A run's instance is
   * ended by the run reaper, as for any worker that went silent.
   */
  private async takeUpOrphans(): Promise<void> {
    const { rows } = await this.database.executeSql(
      `update pgboss.job set started_on = now() - expire_in - interval '1 second' where state = 'active' returning id`,
      [],
    );
    if (rows.length > 0) await this.boss.expire();
  }

  /**
   * Creates the queue unless it exists, or brings its retry options to the catalog's (a
   * database made by an earlier release). Processes starting together on a new database (scale-
   * out's first start) create the same queues at once, and PostgreSQL may answer one of them
   * with a deadlock or a duplicate: that one looks again, after a short random pause.
   */
  private async ensureQueue(name: string, options: Omit<PgBoss.Queue, 'name'>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const existing = await this.boss.getQueue(name);
      if (existing) {
        const differs = (Object.keys(options) as (keyof typeof options)[]).some((k) => existing[k] !== options[k]);
        if (differs) await this.boss.updateQueue(name, { name, ...options });
        return;
      }
      try {
        await this.boss.createQueue(name, { name, ...options });
        return;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt >= 10 || !['40P01', '23505', '42P07', '42710'].includes(code ?? '')) throw err;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 100 * attempt));
      }
    }
  }

  /**
   * Enqueue; pass the transaction that makes the job necessary so both commit together. Its
   * workers, in every process, are woken when it commits (a NOTIFY on `jobs`, which
   * `registerWorkers` turns into `wake`), so they need not poll often.
   */
  async send(name: JobName, data: object, opts: { tx?: Tx; singletonKey?: string; expireInSeconds?: number; startAfter?: Date } = {}): Promise<string | null> {
    const db = opts.tx ? txExecutor(opts.tx) : this.database;
    const id = await this.boss.send(name, data, {
      ...(opts.tx ? { db } : {}),
      ...(opts.singletonKey ? { singletonKey: opts.singletonKey } : {}),
      // Not before this time (scheduled retries).
      ...(opts.startAfter ? { startAfter: opts.startAfter } : {}),
      // Long jobs hold a lease: past it, pg-boss takes the job for dead and retries it.
      expireInSeconds: opts.expireInSeconds ?? this.opts.leaseSeconds ?? 300,
    });
    if (!opts.startAfter) await db.executeSql('select pg_notify($1, $2)', [PG_CHANNELS.jobs, name]);
    else this.wakeAt(name, opts.startAfter);
    return id;
  }

  /**
   * Wakes this process's workers of `name` when a job scheduled for `at` is due (a retry's
   * backoff), so no worker polls often to find it. Once just after `at`, and once a second
   * later in case the database's clock runs behind this one. If this process stops first,
   * the job waits for another process's polling.
   */
  private wakeAt(name: JobName, at: Date): void {
    for (const delay of [DUE_MARGIN_MS, 1000]) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.wake(name);
      }, Math.max(0, at.getTime() - Date.now()) + delay);
      timer.unref();
      this.timers.add(timer);
    }
  }

  /**
   * Registers a worker. Sent jobs wake it, scheduled ones when they are due (see `send`); its
   * polling only finds jobs retried by the queue, expired, or scheduled by a process that has
   * stopped since, so it polls every 5 s unless told otherwise.
   * A worker that found a job looks for the next one at once: one wake-up for many jobs (a
   * sync's range jobs, sent together) must not leave the rest to the polling interval.
   */
  async work(name: JobName, handler: JobHandler, opts: { pollingIntervalSeconds?: number; batchSize?: number } = {}): Promise<void> {
    // Known once `work` returns; a first job could in principle arrive before (PGlite answers
    // without I/O), and then only misses the immediate fetch.
    const worker = { id: '' };
    worker.id = await this.boss.work<Record<string, unknown>>(
      name,
      { pollingIntervalSeconds: opts.pollingIntervalSeconds ?? 5, batchSize: opts.batchSize ?? 1, includeMetadata: true },
      async (jobs) => {
        try {
          for (const job of jobs) await handler(job.data, { attempt: job.retryCount + 1 });
        } finally {
          if (worker.id) this.boss.notifyWorker(worker.id); // fetch again without waiting; an empty fetch then waits
        }
      },
    );
    this.workerIds.set(name, [...(this.workerIds.get(name) ?? []), worker.id]);
  }

  /** Makes this process's idle workers of `name` fetch now instead of at their next poll. */
  wake(name: JobName): void {
    for (const id of this.workerIds.get(name) ?? []) this.boss.notifyWorker(id);
  }

  async stop(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    if (!this.started) return;
    this.started = false;
    await this.boss.stop({ graceful: true, wait: true, timeout: 10_000 });
  }
}

function txExecutor(tx: Tx): PgBoss.Db {
  return {
    async executeSql(text, values) {
      const res = await tx.executeQuery(CompiledQuery.raw(text, values));
      return { rows: res.rows as unknown[] };
    },
  };
}
