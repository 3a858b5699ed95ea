import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { newApiKey } from '../src/core/secrets.js';
import { materialize } from '../src/runtime/workspace.js';
import { HarnesslayerClient } from '../src/sdk/client.js';
import { deployFolder } from '../src/sdk/deploy.js';
import { start } from '../src/start.js';
import { freshDatabase } from './lib.js';

/*
 * A turn's working directory: `materialize()` writes the profile's head state into a new
 * directory before every turn. Timed against `cp -r` of the same files, alternated, in one run.
 * The folder: FILES small text files (notes, as an agent's memory grows), plus 20 small
 * binary files and 5 of 200 KB (both read from the blob store).
 *
 * Environment: BENCH_WORKSPACE_FILES (1000), BENCH_WORKSPACE_ROUNDS (6),
 * BENCH_WORKSPACE_DB (pglite | postgres, in a fresh database dropped afterwards).
 */
const FILES = Number(process.env.BENCH_WORKSPACE_FILES || 1000);
const ROUNDS = Number(process.env.BENCH_WORKSPACE_ROUNDS || 6);
const DB = process.env.BENCH_WORKSPACE_DB || 'pglite';

async function makeFolder(dir: string): Promise<void> {
  const write = async (name: string, body: string | Buffer) => {
    await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await fs.writeFile(path.join(dir, name), body);
  };
  for (let i = 0; i < FILES; i++) await write(`memory/note-${i}.md`, `# Note ${i}\n\n${'Something worth remembering. '.repeat(20 + (i % 50))}\n`);
  for (let i = 0; i < 20; i++) await write(`assets/icon-${i}.png`, Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0]), randomBytes(4000)]));
  for (let i = 0; i < 5; i++) await write(`data/table-${i}.csv`, 'a,b,c\n'.repeat(Math.floor((200 * 1024) / 6)));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function run(): Promise<void> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-workspace-'));
  const database = DB === 'postgres' ? await freshDatabase('workspace') : undefined;
  const userKey = newApiKey();
  const config = loadConfig({}, { ...(database ? { databaseUrl: database.url } : {}), dataDir: path.join(work, 'data'), port: 0, userKey, secret: 'bench-secret' });
  const running = await start(config, 'all', { listen: true });
  try {
    const baseUrl = `http://127.0.0.1:${(running.server!.server.address() as AddressInfo).port}`;
    config.publicUrl = baseUrl;
    const org = await new HarnesslayerClient({ baseUrl, apiKey: userKey }).post<{ apiKey: string }>('/v1/organization/create', { name: 'Bench', slug: 'bench' });
    const client = new HarnesslayerClient({ baseUrl, apiKey: org.apiKey });
    await client.post('/v1/app/create', { slug: 'bench', type: 'openclaw' });
    const src = path.join(work, 'src');
    await makeFolder(src);
    await deployFolder(client, src, 'bench');
    const profile = await client.post<{ id: string }>('/v1/profile/create', { appId: 'bench', identifier: 'reader' });

    const cp: number[] = [];
    const ours: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      execFileSync('sync');
      let t = performance.now();
      execFileSync('cp', ['-r', src, path.join(work, `copy-${round}`)]);
      cp.push(performance.now() - t);
      execFileSync('sync');
      t = performance.now();
      await materialize(running.ctx, profile.id, path.join(work, `turn-${round}`));
      ours.push(performance.now() - t);
    }
    const ms = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(', ');
    console.log(`${FILES + 25} files, ${ROUNDS} rounds (${DB})`);
    console.log(`| what | median | rounds (ms) |\n|---|---|---|`);
    console.log(`| cp -r | ${median(cp).toFixed(0)} ms | ${ms(cp)} |`);
    console.log(`| materialize | ${median(ours).toFixed(0)} ms | ${ms(ours)} |`);
  } finally {
    await running.stop();
    await database?.drop();
    await fs.rm(work, { recursive: true, force: true });
  }
}
