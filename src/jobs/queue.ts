import { CompiledQuery } from 'kysely';
import PgBoss from 'pg-boss';
import type { Database, Tx } from '../storage/db.js';

/**
 * The job catalog: every background job's name and its pg-boss options, in one place.
 * Handlers live next to the domain they serve and are registered by `registerWorkers`.
 */
export const JOBS = {
  'delete-app': { retryLimit: 10, retryDelay: 5, retryBackoff: true },
  'delete-profile': { retryLimit: 10, retryDelay: 5, retryBackoff: true },
} satisfies Record<string, PgBoss.Queue extends infer Q ? Omit<Q & object, 'name'> : never>;

export type JobName = keyof typeof JOBS;
export type JobHandler = (data: Record<string, unknown>) => Promise<void>;

export class Queue {
  readonly boss: PgBoss;
  private started = false;

  constructor(private readonly database: Database) {
    const common = { schema: 'pgboss', supervise: true, schedule: false, migrate: true } as const;
    this.boss =
      database.kind === 'postgres'
        ? new PgBoss({ ...common, connectionString: database.connectionString, max: 4 })
        : new PgBoss({ ...common, db: { executeSql: (text, values) => database.executeSql(text, values) } });
    // pg-boss reports maintenance and worker errors here; without a listener they would throw.
    this.boss.on('error', (err) => console.error('[queue]', err.message));
  }

  async start(): Promise<void> {
    await this.boss.start();
    for (const [name, options] of Object.entries(JOBS)) {
      if (!(await this.boss.getQueue(name))) await this.boss.createQueue(name, { name, ...options });
    }
    this.started = true;
  }

  /** Enqueue; pass the transaction that makes the job necessary so both commit together. */
  async send(name: JobName, data: object, opts: { tx?: Tx; singletonKey?: string } = {}): Promise<string | null> {
    const db = opts.tx ? txExecutor(opts.tx) : undefined;
    return this.boss.send(name, data, { ...(db ? { db } : {}), ...(opts.singletonKey ? { singletonKey: opts.singletonKey } : {}) });
  }

  async work(name: JobName, handler: JobHandler, opts: { pollingIntervalSeconds?: number; batchSize?: number } = {}): Promise<void> {
    await this.boss.work<Record<string, unknown>>(
      name,
      { pollingIntervalSeconds: opts.pollingIntervalSeconds ?? 0.5, batchSize: opts.batchSize ?? 1 },
      async (jobs) => {
        for (const job of jobs) await handler(job.data);
      },
    );
  }

  async stop(): Promise<void> {
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
