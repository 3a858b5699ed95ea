import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { query } from '@anthropic-ai/claude-agent-sdk';
import { loadConfig } from '../src/config.js';
import { newApiKey } from '../src/core/secrets.js';
import { HarnesslayerClient } from '../src/sdk/client.js';
import { start } from '../src/start.js';
import { freshDatabase } from './lib.js';
import { startFakeAnthropic } from '../test/fakes/anthropic.js';

/*
 * Per-turn overhead of the platform. With the fake Anthropic API (test/fakes) answering at
 * once, it times TURNS turns of:
 *  - bare: the SDK's `query()` called directly in a folder holding the app's files;
 *  - platform: `POST /v1/response/run` → the final event seen by a long-poll, through the
 *    whole pipeline (charge, queue, workspace, transcript, events, state commit, history).
 * Overhead = platform − bare; target: under 25% of a bare turn.
 *
 * Environment: BENCH_RUN_TURNS (8), BENCH_RUN_DB (pglite | postgres; postgres uses
 * DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test, in a fresh database).
 */
const TURNS = Number(process.env.BENCH_RUN_TURNS || 8);
const DB = process.env.BENCH_RUN_DB || 'pglite';
const FILES = { 'CLAUDE.md': '# Bench agent\nAnswer briefly.\n', '.claude/settings.json': '{}\n' };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function bare(work: string, baseUrl: string, apiKey: string): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < TURNS + 1; i++) {
    const dir = path.join(work, `bare-${i}`);
    const config = path.join(dir, 'config');
    await fs.mkdir(path.join(dir, 'cwd', '.claude'), { recursive: true });
    await fs.mkdir(config, { recursive: true });
    for (const [name, body] of Object.entries(FILES)) await fs.writeFile(path.join(dir, 'cwd', name), body);
    const t0 = performance.now();
    for await (const message of query({
      prompt: `hello ${i}`,
      options: {
        cwd: path.join(dir, 'cwd'),
        settingSources: ['project'],
        permissionMode: 'acceptEdits',
        env: { PATH: process.env.PATH ?? '', HOME: config, CLAUDE_CONFIG_DIR: config, ANTHROPIC_BASE_URL: baseUrl, ANTHROPIC_API_KEY: apiKey, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' },
      },
    })) {
      if (message.type === 'result') break;
    }
    // The first turn warms the binary's page cache: not counted.
    if (i > 0) times.push(performance.now() - t0);
  }
  return times;
}

async function platform(work: string, baseUrl: string, apiKey: string): Promise<number[]> {
  const database = DB === 'postgres' ? await freshDatabase('run') : undefined;
  const userKey = newApiKey();
  const config = loadConfig({}, { dataDir: path.join(work, 'data'), databaseUrl: database?.url, port: 0, userKey, secret: 'bench', anthropicBaseUrl: baseUrl, anthropicApiKey: apiKey });
  const running = await start(config, 'all', { listen: true });
  try {
    const url = `http://127.0.0.1:${(running.server!.server.address() as AddressInfo).port}`;
    config.publicUrl = url;
    const org = await new HarnesslayerClient({ baseUrl: url, apiKey: userKey }).post<{ apiKey: string }>('/v1/organization/create', { name: 'B', slug: 'bench' });
    const c = new HarnesslayerClient({ baseUrl: url, apiKey: org.apiKey });
    await c.post('/v1/app/create', { slug: 'bench', type: 'claude' });
    const up = await c.post<any>('/v1/version/upload', {
      appId: 'bench',
      files: Object.entries(FILES).map(([name, body]) => ({ name, hash: `sha256-${createHash('sha256').update(body).digest('hex')}` })),
    });
    for (const u of up.uploadUrls) if (!u.exists) await fetch(u.url, { method: 'PUT', headers: u.headers, body: (FILES as Record<string, string>)[u.name] });
    await c.post(`/v1/version/upload/${up.uploadId}/complete`, { appId: 'bench', versionId: up.versionId });
    await c.post('/v1/channel/create', { appId: 'bench', slug: 'api', type: 'api' });
    const times: number[] = [];
    for (let i = 0; i < TURNS + 1; i++) {
      const t0 = performance.now();
      const run = await c.post<{ instanceId: string }>('/v1/response/run', { appId: 'bench', channelId: 'api', userId: 'user', input: `hello ${i}` });
      let after = 0;
      for (;;) {
        const poll = await c.get<{ cursor: number; done: boolean; status: string }>(`/v1/response/poll/${run.instanceId}?after=${after}&timeoutMs=30000`);
        after = poll.cursor;
        if (poll.done) {
          if (poll.status !== 'completed') throw new Error(`turn ended ${poll.status}`);
          break;
        }
      }
      if (i > 0) times.push(performance.now() - t0);
    }
    return times;
  } finally {
    await running.stop();
    await database?.drop();
  }
}

export async function run(): Promise<void> {
  const fake = await startFakeAnthropic();
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-run-'));
  try {
    const b = await bare(work, fake.url, fake.apiKey);
    const p = await platform(work, fake.url, fake.apiKey);
    const mb = median(b);
    const mp = median(p);
    console.log(`bare SDK query():          median ${mb.toFixed(0)} ms per turn (${TURNS} turns)`);
    console.log(`platform (${DB}) run→poll: median ${mp.toFixed(0)} ms per turn (${TURNS} turns)`);
    console.log(`overhead: ${(mp - mb).toFixed(0)} ms = ${(((mp - mb) / mb) * 100).toFixed(0)}% of a bare turn (target: under 25%)`);
  } finally {
    await fake.close();
    await fs.rm(work, { recursive: true, force: true });
  }
}
