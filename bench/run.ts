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
 * (test/fakes) answering at once, it times TURNS turns of each of:
 *  - claude bare: the SDK's `query()` called directly in a folder holding the app's files;
 *  - openclaw bare: `chat.send` straight to a running OpenClaw gateway (its WebSocket
 *    protocol) for an agent whose workspace holds the app's files, until the `final` event;
 *  - platform: `POST /v1/response/run` → the final event seen by a long-poll, through the
 *    whole pipeline (charge, queue, workspace, transcript, events, state commit, history),
 *    for a `claude` app and for an `openclaw` app (one session, like the bare agent's).
 * Bare and platform turns alternate (ABBA), so load from anything else on the machine falls
 * on both alike; the first turn of each is a warm-up, timed apart (for openclaw it includes
 * the session's new OpenClaw agent).
 * Overhead = platform − bare (medians); target: under 25% of a bare turn.
 *
 * Environment: BENCH_RUN_TURNS (12), BENCH_RUN_DB (pglite | postgres; postgres uses
 * DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test, in a fresh database),
 * BENCH_RUN_RUNTIMES (claude,openclaw).
 */
const TURNS = Number(process.env.BENCH_RUN_TURNS || 12);
const DB = process.env.BENCH_RUN_DB || 'pglite';
const RUNTIMES = (process.env.BENCH_RUN_RUNTIMES || 'claude,openclaw').split(',') as AppType[];
type AppType = 'claude' | 'openclaw';
const FILES: Record<AppType, Record<string, string>> = {
  claude: { 'CLAUDE.md': '# Bench agent\nAnswer briefly.\n', '.claude/settings.json': '{}\n' },
  openclaw: { 'AGENTS.md': '# Bench agent\nAnswer briefly.\n', 'MEMORY.md': 'Nothing yet.\n' },
};

interface Subject {
  turn(i: number): Promise<void>;
  close(): Promise<void>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  for (const [name, body] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await fs.writeFile(path.join(dir, name), body);
  }
}

/** `query()` of the Agent SDK in a fresh folder per turn (as each platform turn materializes one). */
async function bareClaude(work: string, baseUrl: string, apiKey: string): Promise<Subject> {
  return {
    async turn(i) {
      const dir = path.join(work, `bare-claude-${i}`);
      const config = path.join(dir, 'config');
      await fs.mkdir(config, { recursive: true });
      await writeFiles(path.join(dir, 'cwd'), FILES.claude);
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
    },
    close: async () => {},
  };
}

/** `chat.send` to a gateway of our pool, on one agent: the runtime without the platform around it. */
async function bareOpenclaw(work: string, baseUrl: string, apiKey: string): Promise<Subject> {
  const pool = new GatewayPool({ dataDir: path.join(work, 'openclaw-bare'), anthropicBaseUrl: baseUrl, anthropicApiKey: apiKey, maxGateways: 1 });
  const lease = await pool.acquire('bench');
  const workspace = await lease.gateway.ensureAgent('bench-bare');
  await writeFiles(workspace, FILES.openclaw);
  const client = await lease.gateway.client();
  return {
    async turn(i) {
      const runId = randomUUID();
      const final = new Promise<void>((resolve, reject) => {
        const off = client.onEvent((event, payload) => {
          const p = payload as { runId?: string; state?: string };
          if (event !== 'chat' || p.runId !== runId) return;
          if (p.state === 'final') resolve();
          else if (p.state === 'error' || p.state === 'aborted') reject(new Error(`bare openclaw turn ended ${p.state}`));
          else return;
          off();
        });
      });
      await client.call('chat.send', { sessionKey: 'agent:bench-bare:main', message: `hello ${i}`, idempotencyKey: runId });
      await final;
    },
    async close() {
      lease.release();
      await pool.close();
    },
  };
}

/** `response/run` → long-poll until done, on a server of its own with an app of `type`. */
async function platform(work: string, baseUrl: string, apiKey: string, type: AppType): Promise<Subject> {
  const database = DB === 'postgres' ? await freshDatabase(`run_${type}`) : undefined;
  const userKey = newApiKey();
  const config = loadConfig({}, { dataDir: path.join(work, `data-${type}`), databaseUrl: database?.url, port: 0, userKey, secret: 'bench', anthropicBaseUrl: baseUrl, anthropicApiKey: apiKey });
  const running = await start(config, 'all', { listen: true });
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
  return {
    async turn(i) {
      // claude: a new session per turn, as each bare query() starts one; openclaw: one session, as the bare agent.
      const sessionId = type === 'openclaw' ? 'bench-session' : undefined;
      const run = await c.post<{ instanceId: string }>('/v1/response/run', { appId: 'bench', channelId: 'api', userId: 'user', input: `hello ${i}`, sessionId });
      let after = 0;
      for (;;) {
        const poll = await c.get<{ cursor: number; done: boolean; status: string }>(`/v1/response/poll/${run.instanceId}?after=${after}&timeoutMs=30000`);
        after = poll.cursor;
        if (poll.done) {
          if (poll.status !== 'completed') throw new Error(`${type} turn ended ${poll.status}`);
          return;
        }
      }
    },
    async close() {
      await running.stop();
      await database?.drop();
    },
  };
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export async function run(): Promise<void> {
  const fake = await startFakeAnthropic();
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-run-'));
  try {
    for (const type of RUNTIMES) {
      const bare = await (type === 'claude' ? bareClaude : bareOpenclaw)(work, fake.url, fake.apiKey);
      const plat = await platform(work, fake.url, fake.apiKey, type);
      try {
        const firstBare = await timed(() => bare.turn(0));
        const firstPlatform = await timed(() => plat.turn(0));
        const b: number[] = [];
        const p: number[] = [];
        for (let i = 1; i <= TURNS; i++) {
          // ABBA: neither side always runs first.
          if (i % 2) {
            b.push(await timed(() => bare.turn(i)));
            p.push(await timed(() => plat.turn(i)));
          } else {
            p.push(await timed(() => plat.turn(i)));
            b.push(await timed(() => bare.turn(i)));
          }
        }
        const mb = median(b);
        const mp = median(p);
        console.log(`${type}: bare median ${mb.toFixed(0)} ms, platform (${DB}) run→poll median ${mp.toFixed(0)} ms per turn (${TURNS} turns each, alternating)`);
        console.log(`${type}: overhead ${(mp - mb).toFixed(0)} ms = ${(((mp - mb) / mb) * 100).toFixed(0)}% of a bare turn (target: under 25%)`);
        console.log(`${type}: first turn: bare ${(firstBare / 1000).toFixed(1)} s, platform ${(firstPlatform / 1000).toFixed(1)} s`);
      } finally {
        await bare.close();
        await plat.close();
      }
    }
  } finally {
    await fake.close();
    await fs.rm(work, { recursive: true, force: true });
  }
}
