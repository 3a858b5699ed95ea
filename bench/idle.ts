import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { newApiKey } from '../src/core/secrets.js';
import { freePort, freshDatabase, startServer, stopServer } from './lib.js';

/*
 * What an idle server costs: `harnesslayer serve` (all roles, embedded PGlite by default)
 * with no request and no job, its CPU time read from /proc/<pid>/stat over a window that
 * starts once start-up has settled. What it spends is its workers looking for jobs (pg-boss
 * fetches) and its timers (maintenance, the run reaper). Linux only (/proc).
 *
 * Environment: BENCH_IDLE_SECONDS (60), BENCH_IDLE_DB (pglite | postgres; postgres uses
 * DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test, in a fresh database).
 */
const WINDOW_S = Number(process.env.BENCH_IDLE_SECONDS || 60);
const SETTLE_S = 10;
const DB = process.env.BENCH_IDLE_DB || 'pglite';

/** User plus system CPU time of a process, in clock ticks. */
async function cpuTicks(pid: number): Promise<number> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // after "pid (comm) "
  return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
}

export async function run(): Promise<void> {
  if (process.platform !== 'linux') {
    console.log('idle: reads /proc, so it runs on Linux only');
    return;
  }
  const hz = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-idle-'));
  const database = DB === 'postgres' ? await freshDatabase('idle') : undefined;
  const port = await freePort();
  const server = await startServer({
    PORT: String(port),
    HOST: '127.0.0.1',
    HARNESSLAYER_DATA_DIR: path.join(work, 'data'),
    HARNESSLAYER_USER_KEY: newApiKey(),
    HARNESSLAYER_SECRET: 'bench-secret',
    LOG_LEVEL: 'warn',
    ...(database ? { DATABASE_URL: database.url } : {}),
  });
  try {
    await sleep(SETTLE_S * 1000); // start-up's own work (migrations, queues) is not idling
    const before = await cpuTicks(server.pid!);
    await sleep(WINDOW_S * 1000);
    const spent = (await cpuTicks(server.pid!)) - before;
    const msPerSecond = ((spent / hz) * 1000) / WINDOW_S;
    console.log(`| database | window | CPU time | share of one core |\n|---|---|---|---|`);
    console.log(`| ${DB} | ${WINDOW_S} s | ${((spent / hz) * 1000).toFixed(0)} ms | ${(msPerSecond / 10).toFixed(1)}% |`);
  } finally {
    await stopServer(server);
    await database?.drop();
    await fs.rm(work, { recursive: true, force: true });
  }
}
