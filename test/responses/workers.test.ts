/**
 * Runs executed by a separate worker process (`serve --role worker`) over PostgreSQL: the
 * API process's long-polls wake on NOTIFY, stops reach the other process, and a worker that
 * dies mid-run leaves a lease that the reaper turns into a failed instance.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allText, startFakeAnthropic, type FakeAnthropic } from '../fakes/anthropic.js';
import { deploy } from '../files/bundle.js';
import { TEST_DB_KIND } from '../helpers/databases.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { client, onTurn } from './helpers.js';

const LEASE_SECONDS = 3;

/** A process that exists and is not a zombie (an orphan waits for whoever adopts it to reap it). */
function running(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

describe.runIf(TEST_DB_KIND === 'postgres')('a worker in another process', () => {
  let t: TestServer;
  let fake: FakeAnthropic;
  let api: ReturnType<typeof client>;
  let appId: string;
  let channelId: string;
  const workers: ChildProcess[] = [];
  const dirs: string[] = [];

  /** `harnesslayer serve --role worker` on the test database and blob store; resolves once it works. */
  async function startWorker(): Promise<ChildProcess> {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'hl-worker-'));
    dirs.push(dataDir);
    const child = spawn(process.execPath, ['bin/harnesslayer.mjs', 'serve', '--role', 'worker'], {
      cwd: path.resolve(import.meta.dirname, '../..'),
      env: {
        PATH: process.env.PATH,
        HOME: dataDir,
        DATABASE_URL: t.database.databaseUrl,
        HARNESSLAYER_DATA_DIR: dataDir,
        HARNESSLAYER_STORAGE: t.config.storage,
        HARNESSLAYER_SECRET: t.config.secret,
        HARNESSLAYER_RUN_LEASE_SECONDS: String(LEASE_SECONDS),
        HARNESSLAYER_ALLOW_PRIVATE_URLS: '1',
        ANTHROPIC_BASE_URL: fake.url,
        ANTHROPIC_API_KEY: fake.apiKey,
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    workers.push(child);
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('worker only')) resolve();
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
      child.once('exit', (code) => reject(new Error(`worker exited with ${code}: ${output}`)));
    });
    return child;
  }

  beforeAll(async () => {
    fake = await startFakeAnthropic();
    // This process serves the API and reaps leases, but runs no turns itself.
    t = await startTestServer({ listen: true, config: { anthropicBaseUrl: fake.url, anthropicApiKey: fake.apiKey, runConcurrency: 0, runLeaseSeconds: LEASE_SECONDS } });
    const key = (await t.org()).key;
    api = client(t, key);
    appId = (await api.call('POST', '/v1/app/create', { slug: 'remote', type: 'claude' })).body.data.id;
    await deploy(t, key, appId, { 'CLAUDE.md': '# remote\n' });
    channelId = (await api.call('POST', '/v1/channel/create', { appId, slug: 'api', type: 'api' })).body.data.id;
    await startWorker();
  });

  afterAll(async () => {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGTERM');
    await Promise.all(workers.map((w) => (w.exitCode === null && w.signalCode === null ? new Promise((r) => w.once('exit', r)) : undefined)));
    await t?.close();
    await fake?.close();
    for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
  });

  it('a long-poll in the API process waits, and returns within 50 ms of an event the worker process stored', async () => {
    // Three samples: this machine's two cores are shared with other test files starting
    // Claude Code processes, so one sample may be late for reasons outside the server. Without
    // the NOTIFY wake-up every sample would wait out its 30 s timeout.
    const latencies: number[] = [];
    for (const n of [1, 2, 3]) {
      const slow = fake.script(onTurn(`REMOTE-SLOW-${n}`, { blocks: [{ type: 'text', text: ['first ', 'second'] }], pauseAfter: 1 }));
      const run = (await api.run({ appId, channelId, userId: 'ana', input: `REMOTE-SLOW-${n}`, sessionId: 'ana-1' })).body.data;
      await slow.paused;
      const cursor = (await api.streamed(run.instanceId, 'first ')).at(-1)!.seq;
      const waiting = api.poll(run.instanceId, cursor, 30_000);
      let answered = 0;
      void waiting.then(() => (answered = Date.now()));
      await new Promise((r) => setTimeout(r, 300)); // the poll is still waiting: no event yet
      expect(answered).toBe(0);
      slow.resume();
      const event = (await waiting).body.data.events[0];
      expect(event).toMatchObject({ seq: cursor + 1, type: 'text.delta', data: { text: 'second' } });
      latencies.push(answered - Date.parse(event.createdAt));
      expect((await api.events(run.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'first second' });
    }
    expect(Math.min(...latencies), String(latencies)).toBeLessThan(50);
    expect(Math.max(...latencies), String(latencies)).toBeLessThan(1_000);
  });

  it('a stop reaches the turn running in the worker process', async () => {
    const slow = fake.script(onTurn('REMOTE-STOP', { blocks: [{ type: 'text', text: ['kept ', 'never'] }], pauseAfter: 1 }));
    const run = (await api.run({ appId, channelId, userId: 'ana', input: 'REMOTE-STOP', sessionId: 'ana-1' })).body.data;
    await slow.paused;
    await api.streamed(run.instanceId, 'kept ');
    const started = Date.now();
    expect((await api.stop(run.instanceId)).body.data).toEqual({ instanceId: run.instanceId, status: 'stopped' });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await api.instance(run.instanceId)).toMatchObject({ status: 'stopped', output: 'kept ' });
  });

  it('a worker killed mid-run leaves an instance that ends failed within the lease, and the session goes on', async () => {
    const stuck = fake.script(onTurn('REMOTE-DIE', { blocks: [{ type: 'text', text: ['dying ', 'never'] }], pauseAfter: 1 }));
    const run = (await api.run({ appId, channelId, userId: 'ana', input: 'REMOTE-DIE', sessionId: 'ana-1' })).body.data;
    await stuck.paused;
    expect((await api.instance(run.instanceId)).status).toBe('running');
    // The worker is killed outright; the Claude Code process it started dies with it
    // (started through setpriv --pdeathsig), rather than running the turn on.
    const claude = execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(workers[0].pid)])
      .toString()
      .trim()
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .filter(([, comm]) => comm === 'claude')
      .map(([pid]) => Number(pid));
    expect(claude).toHaveLength(1);
    const killed = Date.now();
    workers[0].kill('SIGKILL');
    await eventually(async () => !running(claude[0]), 'the Claude Code child to die with its worker', 5_000);
    const events = await api.events(run.instanceId, 20_000);
    // The lease, plus one reaper period and a commit.
    expect(Date.now() - killed).toBeLessThan(LEASE_SECONDS * 1000 + 2_000);
    expect(events.at(-1)).toMatchObject({ type: 'result', done: true, data: { status: 'failed', error: expect.stringContaining('lease') } });
    expect(await api.instance(run.instanceId)).toMatchObject({ status: 'failed' });

    await startWorker();
    const next = fake.script(onTurn('REMOTE-AGAIN', { blocks: [{ type: 'text', text: 'Alive again.' }] }));
    const two = (await api.run({ appId, channelId, userId: 'ana', input: 'REMOTE-AGAIN', sessionId: 'ana-1' })).body.data;
    expect((await api.events(two.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Alive again.' });
    // The conversation carried over: the stopped turn is in it.
    expect(allText((await next.request).body)).toContain('REMOTE-STOP');
  });

  it('a worker shut down mid-run ends its turn failed at once, saying why, and exits', async () => {
    const slow = fake.script(onTurn('REMOTE-SHUTDOWN', { blocks: [{ type: 'text', text: ['begun ', 'never'] }], pauseAfter: 1 }));
    const run = (await api.run({ appId, channelId, userId: 'ana', input: 'REMOTE-SHUTDOWN', sessionId: 'ana-1' })).body.data;
    await slow.paused;
    await api.streamed(run.instanceId, 'begun ');
    const worker = workers.at(-1)!;
    const exited = once(worker, 'exit');
    const started = Date.now();
    worker.kill('SIGTERM');
    const events = await api.events(run.instanceId, 20_000);
    expect(Date.now() - started).toBeLessThan(LEASE_SECONDS * 1000);
    expect(events.at(-1)!.data).toMatchObject({ status: 'failed', output: 'begun ', error: expect.stringContaining('shut down') });
    expect((await exited)[0]).toBe(0);
  });
});
