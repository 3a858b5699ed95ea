import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { ConfigError, defaultPublicUrl, type Config } from './config.js';
import type { Ctx } from './core/context.js';
import { bootstrapOwner } from './core/keys.js';
import { EventHub } from './core/events.js';
import { Secrets } from './core/secrets.js';
import { startMaintenance } from './jobs/maintenance.js';
import { Queue } from './jobs/queue.js';
import { registerWorkers } from './jobs/workers.js';
import { stopRunWorkers } from './runtime/runner.js';
import { buildServer, type Server } from './server/app.js';
import { migrate, openDatabase, type Db } from './storage/db.js';
import { openBlobStore } from './storage/blobs/index.js';

export type Role = 'all' | 'api' | 'worker';

/**
 * The server secret: HARNESSLAYER_SECRET, else one generated on first start and kept in the
 * database, so every process of a scaled-out deployment signs and decrypts alike.
 */
async function serverSecret(db: Db, configured: string | undefined): Promise<string> {
  if (configured) return configured;
  await db
    .insertInto('settings')
    .values({ key: 'secret', value: randomBytes(32).toString('base64url') })
    .onConflict((oc) => oc.column('key').doNothing())
    .execute();
  const row = await db.selectFrom('settings').select('value').where('key', '=', 'secret').executeTakeFirstOrThrow();
  return row.value;
}

/** Opens the database, migrates, starts the queue: everything but listening. */
export async function createContext(config: Config): Promise<Ctx> {
  const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.databaseUrl ? undefined : `${config.dataDir}/db` });
  await migrate(database.db);
  const secrets = new Secrets(await serverSecret(database.db, config.secret));
  const blobs = await openBlobStore(config, secrets);
  const queue = new Queue(database, { leaseSeconds: config.jobLeaseSeconds, maintenanceIntervalSeconds: config.maintenanceIntervalSeconds });
  await queue.start();
  const events = new EventHub(database);
  await events.start();
  return { config, database, db: database.db, secrets, queue, blobs, events, now: () => new Date() };
}

export interface Running {
  ctx: Ctx;
  server: Server | undefined;
  /** The owner key created on a first start, to print once. */
  ownerKey: string | undefined;
  stop(): Promise<void>;
}

export async function start(config: Config, role: Role = 'all', opts: { listen?: boolean; logger?: boolean } = {}): Promise<Running> {
  const ctx = await createContext(config);
  let stopMaintenance: (() => Promise<void>) | undefined;
  let server: Server | undefined;
  let stopping: Promise<void> | undefined;
  const running: Running = {
    ctx,
    server: undefined,
    ownerKey: undefined,
    stop() {
      // Finish in-flight requests, then stop workers, then close the database.
      stopping ??= (async () => {
        // Wake long-polls and streams first, so closing the server does not wait on them.
        await ctx.events.close();
        await server?.close();
        await stopRunWorkers(ctx);
        await stopMaintenance?.();
        await ctx.queue.stop();
        await ctx.database.close();
        await ctx.blobs.close();
      })();
      return stopping;
    },
  };
  try {
    if (role !== 'api') {
      await registerWorkers(ctx);
      stopMaintenance = startMaintenance(ctx);
    }
    if (role !== 'worker') {
      server = await buildServer(ctx, { logger: opts.logger ? { level: config.logLevel } : false });
      running.server = server;
      if (opts.listen !== false) await listen(server, config);
    }
    // Once listening: a first start that cannot listen must not create (and lose) the owner key.
    running.ownerKey = await bootstrapOwner(ctx, config.userKey);
  } catch (err) {
    await running.stop().catch(() => {});
    throw err;
  }
  return running;
}

async function listen(server: Server, config: Config): Promise<void> {
  try {
    await server.listen({ port: config.port, host: config.host });
    // "Any free port": signed URLs, when their base is the default, name the one taken.
    if (config.port === 0 && config.publicUrl === defaultPublicUrl(config.host, 0)) {
      config.publicUrl = defaultPublicUrl(config.host, (server.server.address() as AddressInfo).port);
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new ConfigError(`${config.host}:${config.port} is already in use (another harnesslayer, or another program): set PORT, or --port, to a free port.`);
    if (code === 'EADDRNOTAVAIL') throw new ConfigError(`${config.host} is not an address of this machine: set HOST, or --host, to one (127.0.0.1, or 0.0.0.0 for every interface).`);
    throw err;
  }
}
