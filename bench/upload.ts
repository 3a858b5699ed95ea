import { execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { newApiKey } from '../src/core/secrets.js';
import { HarnesslayerClient } from '../src/sdk/client.js';
import { deployFolder } from '../src/sdk/deploy.js';
import { freePort, freshDatabase, startServer, stopServer } from './lib.js';

/*
 * Uploading a FILES-file, ~TOTAL_MB MB folder as an app version through the API against
 * `cp -r` of the same folder, in the same run. The server runs as its own process, started
 * the way `npm start` starts it (`harnesslayer serve`, embedded PGlite and the local blob
 * directory by default); this process does what `harnesslayer deploy` does: hash, ask for
 * upload URLs, send what is missing, complete. Target: within 3x of cp.
 *
 * Each of ROUNDS rounds writes a new random folder, then times `cp -r` of it and its upload
 * as a new version, each after a `sync` so neither pays for the other's writeback. The upload
 * returns once its files are on the disk (the local store flushes them before the version
 * commits); `cp -r` returns with them in the page cache, so the `sync` after it is timed too,
 * and the ratio is given against both.
 *
 * Environment: BENCH_UPLOAD_FILES (1000), BENCH_UPLOAD_MB (100), BENCH_UPLOAD_ROUNDS (3),
 * BENCH_UPLOAD_DB (pglite | postgres; postgres uses DATABASE_URL, default
 * postgres://postgres@127.0.0.1:5432/test, in a fresh database that is dropped afterwards).
 */
const FILES = Number(process.env.BENCH_UPLOAD_FILES || 1000);
const TOTAL_MB = Number(process.env.BENCH_UPLOAD_MB || 100);
const ROUNDS = Number(process.env.BENCH_UPLOAD_ROUNDS || 3);
const DB = process.env.BENCH_UPLOAD_DB || 'pglite';

async function makeFolder(dir: string): Promise<number> {
  // Sizes vary (a few KB to ~1 MB) around the mean; contents are random, so nothing dedupes.
  const mean = (TOTAL_MB * 1024 * 1024) / FILES;
  let bytes = 0;
  for (let i = 0; i < FILES; i++) {
    const size = Math.max(1, Math.round(mean * (0.2 + (1.6 * ((i * 7919) % 1000)) / 1000)));
    const file = path.join(dir, `dir-${i % 20}`, `file-${i}.bin`);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, randomBytes(size));
    bytes += size;
  }
  return bytes;
}

export async function run(): Promise<void> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-upload-'));
  let database: Awaited<ReturnType<typeof freshDatabase>> | undefined;
  let server: ChildProcess | undefined;
  try {
    if (DB === 'postgres') database = await freshDatabase('upload');
    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const userKey = newApiKey();
    server = await startServer({
      PORT: String(port),
      HOST: '127.0.0.1',
      HARNESSLAYER_DATA_DIR: path.join(work, 'data'),
      HARNESSLAYER_USER_KEY: userKey,
      HARNESSLAYER_SECRET: 'bench-secret',
      HARNESSLAYER_PUBLIC_URL: baseUrl,
      ...(database ? { DATABASE_URL: database.url } : {}),
    });
    const org = await new HarnesslayerClient({ baseUrl, apiKey: userKey }).post<{ apiKey: string }>('/v1/organization/create', { name: 'Bench', slug: 'bench' });
    const client = new HarnesslayerClient({ baseUrl, apiKey: org.apiKey });
    await client.post('/v1/app/create', { slug: 'bench', type: 'openclaw' });

    const rows: string[][] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const src = path.join(work, `src-${round}`);
      const bytes = await makeFolder(src);
      const mib = bytes / 1024 / 1024;

      execFileSync('sync');
      const t0 = performance.now();
      execFileSync('cp', ['-r', src, path.join(work, `copy-${round}`)]);
      const cpSeconds = (performance.now() - t0) / 1000;
      execFileSync('sync');
      const cpSyncSeconds = (performance.now() - t0) / 1000;

      execFileSync('sync');
      const t1 = performance.now();
      let hashed = t1; // phase ends: hashing done, last file sent (complete follows)
      let sent = t1;
      const result = await deployFolder(client, src, 'bench', {
        onProgress: (p) => {
          if (p.phase === 'hashing') hashed = performance.now();
          else sent = performance.now();
        },
      });
      const end = performance.now();
      const apiSeconds = (end - t1) / 1000;
      if (result.uploaded !== FILES) throw new Error(`expected ${FILES} files sent, got ${result.uploaded}`);
      const s = (ms: number) => (ms / 1000).toFixed(2);
      const ratio = (apiSeconds / cpSeconds).toFixed(2);
      const ratioSync = (apiSeconds / cpSyncSeconds).toFixed(2);
      rows.push([String(round), `${mib.toFixed(0)} MiB`, s(cpSeconds * 1000), s(cpSyncSeconds * 1000), s(apiSeconds * 1000), s(hashed - t1), s(sent - hashed), s(end - sent), `${ratio}x`, `${ratioSync}x`]);
      console.log(`round ${round}: cp -r ${s(cpSeconds * 1000)} s (with sync ${s(cpSyncSeconds * 1000)} s), API upload ${s(apiSeconds * 1000)} s (version ${result.version.number}), ratio ${ratio}x (${ratioSync}x)`);
    }
    const header = ['round', 'folder', 'cp -r s', 'cp -r + sync s', `API (${DB}) s`, 'hash s', 'send s', 'complete s', 'ratio', 'ratio (+ sync)'];
    console.log(`\n${FILES} files per round; target: within 3x of cp -r`);
    console.log(`| ${header.join(' | ')} |\n|${header.map(() => '---').join('|')}|`);
    for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  } finally {
    if (server) await stopServer(server);
    await database?.drop();
    await fs.rm(work, { recursive: true, force: true });
  }
}
