import { Command, Option } from 'commander';
import type { AddressInfo } from 'node:net';
import { ConfigError, defaultPublicUrl, loadConfig } from '../config.js';
import { registerDeployCommand } from './deploy.js';
import { registerRunCommand } from './run.js';
import type { Role } from '../start.js';

// The server's modules (Fastify, the database, the runtimes, the S3 client) are loaded by the
// commands that use them only: `deploy` and `run` are API clients, and loading the whole
// server graph through tsx cost them over a second before they did anything.

const program = new Command()
  .name('harnesslayer')
  .description('Host AI agent apps for many end users: versioned per-user files, sync, real agent runtimes.')
  .showHelpAfterError('(run with --help for usage)');

program
  .command('serve')
  .description('Serve the API and run the background workers (configuration comes from the environment; see README).')
  .addOption(new Option('--role <role>', 'all: API and workers; api: HTTP only; worker: jobs only').choices(['all', 'api', 'worker']).default('all'))
  .option('--port <port>', 'overrides PORT')
  .option('--host <host>', 'overrides HOST')
  .option('--data-dir <dir>', 'overrides HARNESSLAYER_DATA_DIR')
  .action(async (opts: { role: Role; port?: string; host?: string; dataDir?: string }) => {
    const config = loadConfig(process.env, {
      ...(opts.port ? { port: Number(opts.port) } : {}),
      ...(opts.host ? { host: opts.host } : {}),
      ...(opts.dataDir ? { dataDir: opts.dataDir } : {}),
    });
    if (opts.role !== 'all' && !config.databaseUrl) {
      throw new ConfigError(`--role ${opts.role} splits the server over processes and needs DATABASE_URL (PostgreSQL); the embedded database serves one process.`);
    }
    const { start } = await import('../start.js');
    const running = await start(config, opts.role, { logger: true });
    if (running.ownerKey) {
      console.log(`\nFirst start: created the owner. Its user API key (shown once, keep it):\n\n  ${running.ownerKey}\n`);
    }
    const where = running.server ? `listening on ${defaultPublicUrl(config.host, (running.server.server.address() as AddressInfo).port)}` : 'worker only';
    console.log(`harnesslayer ${opts.role}: ${where} (database: ${running.ctx.database.kind})`);
    if (opts.role !== 'api' && !config.anthropicApiKey) {
      console.warn('Warning: ANTHROPIC_API_KEY is not set. The API works, but every agent turn fails until it is set (restart with ANTHROPIC_API_KEY=...).');
    }
    const shutdown = (signal: string) => {
      console.log(`${signal}: stopping. Requests in flight get their answers; running agent turns end failed ("run it again"); other jobs finish, or are taken up again by a worker.`);
      running.stop().then(
        () => process.exit(0),
        (err) => {
          console.error(err);
          process.exit(1);
        },
      );
    };
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
  });

const user = program.command('user').description('Manage user API keys (they call /v1/organization/*).');
user
  .command('create')
  .description('Create a user and print its API key once (for an --email that has a user, a new key for that user).')
  .option('--email <email>', 'the person this key belongs to')
  .option('--data-dir <dir>', 'overrides HARNESSLAYER_DATA_DIR (as serve --data-dir)')
  .action(async (opts: { email?: string; dataDir?: string }) => {
    const config = loadConfig(process.env, opts.dataDir ? { dataDir: opts.dataDir } : {});
    const [{ createUser }, { migrate, openDatabase }] = await Promise.all([import('../core/keys.js'), import('../storage/db.js')]);
    const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.databaseUrl ? undefined : `${config.dataDir}/db` });
    try {
      await migrate(database.db);
      const { userId, apiKey, existed } = await createUser({ db: database.db }, opts.email ?? null);
      const who = `${userId}${opts.email ? ` <${opts.email}>` : ''}`;
      if (existed) console.log(`User ${who} exists: a new API key for it (shown once; its other keys keep working):\n\n  ${apiKey}\n`);
      else console.log(`Created user ${who}. API key (shown once):\n\n  ${apiKey}\n`);
    } finally {
      await database.close();
    }
  });

registerDeployCommand(program);
registerRunCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError) console.error(`Configuration error: ${err.message}`);
  else console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
