import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { query } from '@anthropic-ai/claude-agent-sdk';
import { loadConfig } from '../src/config.js';
import { newApiKey } from '../src/core/secrets.js';
import { GatewayPool } from '../src/runtime/openclaw-pool.js';
import { HarnesslayerClient } from '../src/sdk/client.js';
import { start } from '../src/start.js';
import { freshDatabase } from './lib.js';
import { startFakeAnthropic } from '../test/fakes/anthropic.js';

/*
 * Per-turn overhead of the platform, for each runtime. With the fake Anthropic API
 * (test/fakes) answering at once, it times TURNS turns of:
 *  - claude bare: the SDK's `query()` called directly in a folder holding the app's files;
 *  - openclaw bare: `chat.send` straight to a running OpenClaw gateway (its WebSocket
 *    protocol) for an agent whose workspace holds the app's files, until the `final` event;
 *  - platform: `POST /v1/response/run` → the final event seen by a long-poll, through the
 *    whole pipeline (charge, queue, workspace, transcript, events, state commit, history),
 *    for a `claude` app and for an `openclaw` app. Openclaw turns run on one session (its
 *    first turn, which creates the session's OpenClaw agent, is timed apart).
 * Overhead = platform − bare; target: under 25% of a bare turn.
 *
 * Environment: BENCH_RUN_TURNS (8), BENCH_RUN_DB (pglite | postgres; postgres uses
 * DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test, in a fresh database),
 * BENCH_RUN_RUNTIMES (claude,openclaw).
 */
const TURNS = Number(process.env.BENCH_RUN_TURNS || 8);
const DB = process.env.BENCH_RUN_DB || 'pglite';
const RUNTIMES = (process.env.BENCH_RUN_RUNTIMES || 'claude,openclaw').split(',');
const CLAUDE_FILES = { 'CLAUDE.md': '# Bench agent\nAnswer briefly.\n', '.claude/settings.json': '{}\n' };
const OPENCLAW_FILES = { 'AGENTS.md': '# Bench agent\nAnswer briefly.\n', 'MEMORY.md': 'Nothing yet.\n' };
type AppType = 'claude' | 'openclaw';
const FILES: Record<AppType, Record<string, string>> = { claude: CLAUDE_FILES, openclaw: OPENCLAW_FILES };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function bare(work: string, baseUrl: string, apiKey: string): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < TURNS + 1; i++) {
    const dir = path.join(work, `bare-${i}`);
    const config = path.join(dir, 'config');
    await fs.mkdir(path.join(dir, 'cwd', '.claude'), { recursive: true });
    await fs.mkdir(config, { recursive: true });
    for (const [name, body] of Object.entries(CLAUDE_FILES)) await fs.writeFile(path.join(dir, 'cwd', name), body);
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

/** Turns sent straight to a gateway of our pool: the runtime without the platform around it. */
async function bareOpenclaw(work: string, baseUrl: string, apiKey: string): Promise<{ first: number; times: number[] }> {
  const pool = new GatewayPool({ dataDir: path.join(work, 'openclaw-bare'), anthropicBaseUrl: baseUrl, anthropicApiKey: apiKey, maxGateways: 1 });
  const lease = await pool.acquire('bench');
  try {
    const t0 = performance.now();
    const workspace = await lease.gateway.ensureAgent('bench-bare');
    for (const [name, body] of Object.entries(OPENCLAW_FILES)) await fs.writeFile(path.join(workspace, name), body);
    const c = await lease.gateway.client();
    const turn = async (i: number) => {
      const runId = randomUUID();
      const final = new Promise<void>((resolve, reject) => {
        const off = c.onEvent((event, payload) => {
          const p = payload as { runId?: string; state?: string };
          if (event !== 'chat' || p.runId !== runId) return;
          if (p.state === 'final') resolve();
          else if (p.state === 'error' || p.state === 'aborted') reject(new Error(`bare openclaw turn ended ${p.state}`));
          else return;
          off();
        });
      });
      await c.call('chat.send', { sessionKey: 'agent:bench-bare:main', message: `hello ${i}`, idempotencyKey: runId });
      await final;
    };
    await turn(0);
    const first = performance.now() - t0;
    const times: number[] = [];
    for (let i = 1; i <= TURNS; i++) {
      const t = performance.now();
      await turn(i);
      times.push(performance.now() - t);
    }
    return { first, times };
  } finally {
    lease.release();
    await pool.close();
  }
}

async function platform(work: string, baseUrl: string, apiKey: string, type: AppType): Promise<{ first: number; times: number[] }> {
  const database = DB === 'postgres' ? await freshDatabase('run') : undefined;
  const userKey = newApiKey();
  const config = loadConfig({}, { dataDir: path.join(work, `data-${type}`), databaseUrl: database?.url, port: 0, userKey, secret: 'bench', anthropicBaseUrl: baseUrl, anthropicApiKey: apiKey });
  const running = await start(config, 'all', { listen: true });
  try {
    const url = `http://127.0.0.1:${(running.server!.server.address() as AddressInfo).port}`;
    config.publicUrl = url;
    const org = await new HarnesslayerClient({ baseUrl: url, apiKey: userKey }).post<{ apiKey: string }>('/v1/organization/create', { name: 'B', slug: 'bench' });
    const c = new HarnesslayerClient({ baseUrl: url, apiKey: org.apiKey });
    await c.post('/v1/app/create', { slug: 'bench', type });
    const up = await c.post<any>('/v1/version/upload', {
      appId: 'bench',
      files: Object.entries(FILES[type]).map(([name, body]) => ({ name, hash: `sha256-${createHash('sha256').update(body).digest('hex')}` })),
    });
    for (const u of up.uploadUrls) if (!u.exists) await fetch(u.url, { method: 'PUT', headers: u.headers, body: FILES[type][u.name] });
    await c.post(`/v1/version/upload/${up.uploadId}/complete`, { appId: 'bench', versionId: up.versionId });
    await c.post('/v1/channel/create', { appId: 'bench', slug: 'api', type: 'api' });
    const times: number[] = [];
    let first = 0;
    for (let i = 0; i < TURNS + 1; i++) {
      const t0 = performance.now();
      // claude: a new session per turn, as the bare query() starts one; openclaw: one session.
      const sessionId = type === 'openclaw' ? 'bench-session' : undefined;
      const run = await c.post<{ instanceId: string }>('/v1/response/run', { appId: 'bench', channelId: 'api', userId: 'user', input: `hello ${i}`, sessionId });
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
      else first = performance.now() - t0;
    }
    return { first, times };
  } finally {
    await running.stop();
    await database?.drop();
  }
}

export async function run(): Promise<void> {
  const fake = await startFakeAnthropic();
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-run-'));
  const report = (label: string, bareMs: number, platformMs: number) => {
    console.log(`${label}: bare median ${bareMs.toFixed(0)} ms, platform (${DB}) run→poll median ${platformMs.toFixed(0)} ms per turn (${TURNS} turns)`);
    console.log(`${label}: overhead ${(platformMs - bareMs).toFixed(0)} ms = ${(((platformMs - bareMs) / bareMs) * 100).toFixed(0)}% of a bare turn (target: under 25%)`);
  };
  try {
    if (RUNTIMES.includes('claude')) {
      const b = await bare(work, fake.url, fake.apiKey);
      const p = await platform(work, fake.url, fake.apiKey, 'claude');
      report('claude', median(b), median(p.times));
    }
    if (RUNTIMES.includes('openclaw')) {
      const b = await bareOpenclaw(work, fake.url, fake.apiKey);
      const p = await platform(work, fake.url, fake.apiKey, 'openclaw');
      report('openclaw', median(b.times), median(p.times));
      console.log(`openclaw: first turn (gateway start + new agent): bare ${(b.first / 1000).toFixed(1)} s, platform ${(p.first / 1000).toFixed(1)} s`);
    }
  } finally {
    await fake.close();
    await fs.rm(work, { recursive: true, force: true });
  }
}
