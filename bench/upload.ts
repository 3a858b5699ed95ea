import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { newApiKey } from '../src/core/secrets.js';
import { HarnesslayerClient } from '../src/sdk/client.js';
import { deployFolder } from '../src/sdk/deploy.js';
import { start } from '../src/start.js';
import { freshDatabase } from './lib.js';

/*
 * Uploading a FILES-file, ~TOTAL_MB MB folder as an app version through the API (hash,
 * upload URLs, PUTs, complete: what `harnesslayer deploy` does) against `cp -r` of the same
 * folder, in the same run. Target: within 3x of cp.
 *
 * Environment: BENCH_UPLOAD_FILES (1000), BENCH_UPLOAD_MB (100), BENCH_UPLOAD_DB
 * (pglite | postgres; postgres uses DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test,
 * in a fresh database that is dropped afterwards).
 */
const FILES = Number(process.env.BENCH_UPLOAD_FILES || 1000);
const TOTAL_MB = Number(process.env.BENCH_UPLOAD_MB || 100);
const DB = process.env.BENCH_UPLOAD_DB || 'pglite';

async function makeFolder(dir: string): Promise<void> {
  // Sizes vary (a few KB to ~1 MB) around the mean; contents are random, so nothing dedupes.
  const mean = (TOTAL_MB * 1024 * 1024) / FILES;
  for (let i = 0; i < FILES; i++) {
    const size = Math.max(1, Math.round(mean * (0.2 + 1.6 * ((i * 7919) % 1000) / 1000)));
    const file = path.join(dir, `dir-${i % 20}`, `file-${i}.bin`);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, randomBytes(size));
  }
}

export async function run(): Promise<void> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-upload-'));
  let database: Awaited<ReturnType<typeof freshDatabase>> | undefined;
  try {
    const src = path.join(work, 'src');
    await makeFolder(src);
    const bytes = Number(execFileSync('du', ['-sb', src]).toString().split('\t')[0]);
    console.log(`folder: ${FILES} files, ${(bytes / 1024 / 1024).toFixed(1)} MiB`);

    const t0 = performance.now();
    execFileSync('cp', ['-r', src, path.join(work, 'copy')]);
    const cpSeconds = (performance.now() - t0) / 1000;

    if (DB === 'postgres') database = await freshDatabase('upload');
    const userKey = newApiKey();
    const config = loadConfig({}, { dataDir: path.join(work, 'data'), databaseUrl: database?.url, port: 0, userKey, secret: 'bench-secret' });
    const running = await start(config, 'all', { listen: true });
    try {
      const baseUrl = `http://127.0.0.1:${(running.server!.server.address() as AddressInfo).port}`;
      config.publicUrl = baseUrl;
      const org = await new HarnesslayerClient({ baseUrl, apiKey: userKey }).post<{ apiKey: string }>('/v1/organization/create', { name: 'Bench', slug: 'bench' });
      const client = new HarnesslayerClient({ baseUrl, apiKey: org.apiKey });
      await client.post('/v1/app/create', { slug: 'bench', type: 'openclaw' });
      const t1 = performance.now();
      const result = await deployFolder(client, src, 'bench');
      const apiSeconds = (performance.now() - t1) / 1000;
      console.log(`cp -r:              ${cpSeconds.toFixed(2)} s (${(bytes / 1024 / 1024 / cpSeconds).toFixed(0)} MiB/s)`);
      console.log(`API upload (${DB}): ${apiSeconds.toFixed(2)} s (${(bytes / 1024 / 1024 / apiSeconds).toFixed(0)} MiB/s), version ${result.version.number}, ${result.uploaded} files PUT`);
      console.log(`ratio: ${(apiSeconds / cpSeconds).toFixed(2)}x cp (target: within 3x)`);
    } finally {
      await running.stop();
    }
  } finally {
    await database?.drop();
    await fs.rm(work, { recursive: true, force: true });
  }
}
