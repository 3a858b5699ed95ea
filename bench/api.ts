import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Fastify from 'fastify';
import { sql } from 'kysely';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import type { Ctx } from '../src/core/context.js';
import { newApiKey } from '../src/core/secrets.js';
import { start } from '../src/start.js';

/*
 * Requests/s of an authenticated `GET /v1/app/{id}` on a real listening server, next to a
 * bare Fastify handler that returns the same JSON, measured in the same run on PostgreSQL and
 * on PGlite. The load generator runs in a worker thread so it does not share the server's
 * event loop. The targets take turns in short slices (ROUNDS of DURATION/ROUNDS seconds each),
 * so that load from anything else on the machine falls on all of them alike.
 * Target: on PostgreSQL, at least 50% of the bare handler. The same app is read over and over,
 * so this is the steady state of the in-process app cache (src/core/app-cache.ts): every
 * request after the first is a hit; a miss costs one round trip, as the `select 1` row shows.
 *
 * Environment: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test; a fresh database
 * is created next to it and dropped afterwards), BENCH_CONNECTIONS (20), BENCH_DURATION (8 s),
 * BENCH_WARMUP (2 s), BENCH_BACKENDS (postgres,pglite).
 */

interface Result {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number };
  duration: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}
interface Measure {
  rps: number;
  p50: number;
  p99: number;
}
// autocannon ships CommonJS without types.
const autocannon = createRequire(import.meta.url)('autocannon') as (opts: object) => Promise<Result>;

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS || 20);
const DURATION = Number(process.env.BENCH_DURATION || 8);
const WARMUP = Number(process.env.BENCH_WARMUP || 2);
const ROUNDS = 4;
const BACKENDS = (process.env.BENCH_BACKENDS || 'postgres,pglite').split(',') as Backend[];
const PG_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
const TARGET = 0.5;

type Backend = 'postgres' | 'pglite';

async function fire(url: string, headers: Record<string, string>, duration: number): Promise<Result> {
  const result = await autocannon({ url, headers, connections: CONNECTIONS, workers: 1, duration });
  if (result.non2xx || result.errors || result.timeouts) {
    throw new Error(`${url}: ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts`);
  }
  return result;
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

/** Warms every URL, then measures them in turns; req/s over all slices, latencies as slice medians. */
async function loadInTurns(urls: string[], headers: Record<string, string>): Promise<Measure[]> {
  for (const url of urls) await fire(url, headers, WARMUP);
  const slices: Result[][] = urls.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, url] of urls.entries()) slices[i].push(await fire(url, headers, DURATION / ROUNDS));
  }
  return slices.map((rs) => ({
    rps: rs.reduce((n, r) => n + r.requests.total, 0) / rs.reduce((n, r) => n + r.duration, 0),
    p50: median(rs.map((r) => r.latency.p50)),
    p99: median(rs.map((r) => r.latency.p99)),
  }));
}

async function post(base: string, key: string, route: string, body: unknown): Promise<any> {
  const res = await fetch(`${base}${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as { success: boolean; data: any };
  if (!json.success) throw new Error(`${route}: ${JSON.stringify(json)}`);
  return json.data;
}

/** A fresh database, a listening server with an organization and one app; all removed afterwards. */
async function withServer<T>(backend: Backend, fn: (base: string, orgKey: string, app: { id: string }, ctx: Ctx) => Promise<T>): Promise<T> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-'));
  const dbName = `harnesslayer_bench_${randomBytes(6).toString('hex')}`;
  let databaseUrl: string | undefined;
  if (backend === 'postgres') {
    const url = new URL(PG_URL);
    await admin((c) => c.query(`create database ${dbName}`));
    url.pathname = `/${dbName}`;
    databaseUrl = url.toString();
  }
  const userKey = newApiKey();
  const config = loadConfig({}, { port: 0, host: '127.0.0.1', dataDir, databaseUrl, userKey, logLevel: 'error' });
  try {
    const running = await start(config, 'all', { listen: true });
    try {
      const base = `http://127.0.0.1:${(running.server!.server.address() as AddressInfo).port}`;
      const org = await post(base, userKey, '/v1/organization/create', { name: 'Bench', slug: 'bench' });
      const app = await post(base, org.apiKey, '/v1/app/create', { slug: 'bench-app', type: 'claude' });
      return await fn(base, org.apiKey, app, running.ctx);
    } finally {
      await running.stop();
    }
  } finally {
    if (backend === 'postgres') await admin((c) => c.query(`drop database if exists ${dbName} with (force)`));
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

async function admin(fn: (c: pg.Client) => Promise<unknown>): Promise<void> {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * The baseline: Fastify with one route returning the same JSON, no auth, no database; with
 * `before`, it first awaits that (one `select 1`: the floor of any request that reads the database).
 */
async function bareServer(reply: unknown, before?: () => Promise<unknown>): Promise<{ base: string; close(): Promise<void> }> {
  const bare = Fastify({ logger: false });
  bare.get('/v1/app/:app_id', async () => (before ? (await before(), reply) : reply));
  await bare.listen({ port: 0, host: '127.0.0.1' });
  return { base: `http://127.0.0.1:${(bare.server.address() as AddressInfo).port}`, close: () => bare.close() };
}

interface Row {
  backend: Backend;
  bare: Measure;
  oneQuery: Measure;
  api: Measure;
}

export async function run(): Promise<void> {
  console.log(
    `GET /v1/app/{id}: ${CONNECTIONS} connections, ${WARMUP} s warm-up + ${DURATION} s in ${ROUNDS} turns, ` +
      `${os.cpus().length} cores, Node ${process.version}, load average ${os.loadavg()[0].toFixed(1)}`,
  );
  const rows: Row[] = [];
  for (const backend of BACKENDS) {
    rows.push(
      await withServer(backend, async (base, key, app, ctx) => {
        const headers = { authorization: `Bearer ${key}` };
        const url = `${base}/v1/app/${app.id}`;
        const reply = await (await fetch(url, { headers })).json();
        // The baselines run while the real server idles beside them, so all see the same machine.
        const bare = await bareServer(reply);
        const oneQuery = await bareServer(reply, () => sql`select 1`.execute(ctx.db));
        try {
          const [b, q, api] = await loadInTurns([`${bare.base}/v1/app/${app.id}`, `${oneQuery.base}/v1/app/${app.id}`, url], headers);
          return { backend, bare: b, oneQuery: q, api };
        } finally {
          await bare.close();
          await oneQuery.close();
        }
      }),
    );
  }

  const ratio = (r: Measure, bare: Measure) => `${((r.rps / bare.rps) * 100).toFixed(1)}%`;
  const table = rows.flatMap(({ backend, bare, oneQuery, api }) => [
    [backend, 'bare Fastify handler', bare, '100%'],
    [backend, 'bare + one select 1', oneQuery, ratio(oneQuery, bare)],
    [backend, 'GET /v1/app/{id}', api, ratio(api, bare)],
  ]);
  const header = ['database', 'server', 'req/s', 'p50 ms', 'p99 ms', 'vs bare'];
  const lines = [header, ...table.map(([db, server, r, ratio]) => {
    const m = r as Measure;
    return [db as string, server as string, Math.round(m.rps).toLocaleString('en-US'), String(m.p50), String(m.p99), ratio as string];
  })];
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  for (const l of lines) console.log(`| ${l.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`);

  const onPg = rows.find((r) => r.backend === 'postgres');
  if (onPg) {
    const ratio = onPg.api.rps / onPg.bare.rps;
    console.log(`PostgreSQL ratio ${(ratio * 100).toFixed(1)}% (target ≥ ${TARGET * 100}%): ${ratio >= TARGET ? 'met' : 'BELOW TARGET'}`);
  }
}
