import { sql } from 'kysely';
import { loadConfig, type Config } from '../../src/config.js';
import type { Ctx } from '../../src/core/context.js';
import { start, type Role } from '../../src/start.js';
import type { Server } from '../../src/server/app.js';
import { cloneTemplate, type TestDatabase } from './databases.js';

export interface ApiReply<T = any> {
  status: number;
  body: { success: boolean; data: T; error: string; code?: string; details?: unknown };
  headers: Record<string, string | string[] | number | undefined>;
}

export interface TestServer {
  ctx: Ctx;
  server: Server;
  /** http://127.0.0.1:<port> once `listen` was asked for. */
  url: string;
  userKey: string;
  config: Config;
  database: TestDatabase;
  call<T = any>(method: string, path: string, opts?: { key?: string; body?: unknown; headers?: Record<string, string> }): Promise<ApiReply<T>>;
  /** Creates an organization and returns its organization key. */
  org(slug?: string): Promise<{ key: string; id: string; slug: string }>;
  /** Stops the server and drops its database, unless `keepDatabase` (to start again on it). */
  close(opts?: { keepDatabase?: boolean }): Promise<void>;
}

const USER_KEY = 'dk-TestUserKey0000000000000000000000000000';
let counter = 0;

/** `database`: start on that one (a restart) instead of a fresh copy of the template. */
export async function startTestServer(opts: { listen?: boolean; role?: Role; config?: Partial<Config>; database?: TestDatabase } = {}): Promise<TestServer> {
  const database = opts.database ?? (await cloneTemplate());
  const config = loadConfig(
    { HARNESSLAYER_ALLOW_PRIVATE_URLS: '1' },
    {
      port: 0,
      host: '127.0.0.1',
      dataDir: database.dataDir,
      databaseUrl: database.databaseUrl,
      userKey: USER_KEY,
      secret: 'test-secret-0123456789',
      ...opts.config,
    },
  );
  const running = await start(config, opts.role ?? 'all', { listen: opts.listen ?? false });
  const server = running.server!;
  const url = opts.listen ? config.publicUrl : ''; // start() put the port it got in it
  const call: TestServer['call'] = async (method, path, o = {}) => {
    const key = o.key ?? USER_KEY;
    const res = await server.inject({
      method: method as 'GET',
      url: path,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(o.headers ?? {}) },
      ...(o.body !== undefined ? { payload: typeof o.body === 'string' ? o.body : JSON.stringify(o.body), headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...(o.headers ?? {}) } } : {}),
    });
    return { status: res.statusCode, body: res.json(), headers: res.headers };
  };
  return {
    ctx: running.ctx,
    server,
    url,
    userKey: USER_KEY,
    config,
    database,
    call,
    async org(slug = `org-${++counter}-${Math.random().toString(36).slice(2, 8)}`) {
      const res = await call('POST', '/v1/organization/create', { body: { name: slug, slug } });
      if (res.status !== 200) throw new Error(`org create failed: ${JSON.stringify(res.body)}`);
      return { key: res.body.data.apiKey, id: res.body.data.id, slug };
    },
    async close(o = {}) {
      await running.stop();
      if (!o.keepDatabase) await database.drop();
    },
  };
}

/** Until a transaction of this PostgreSQL database waits for a lock (`what` waits on it). */
export async function lockWaited(t: TestServer, what: string): Promise<void> {
  await eventually(async () => {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_locks where not granted`.execute(t.ctx.db);
    return rows[0].n > 0;
  }, what);
}

/** Polls `check` until it returns a value (waiting on the row, never a fixed sleep). */
export async function eventually<T>(check: () => Promise<T | undefined | null | false>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 25));
  }
}
