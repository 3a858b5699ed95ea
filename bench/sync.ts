import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { newApiKey } from '../src/core/secrets.js';
import { start } from '../src/start.js';
import { freshDatabase } from './lib.js';
import { seedProfiles } from '../test/helpers/seed.js';

/*
 * Version sync at scale. An app with PROFILES profiles (20 files each: 19 from the version
 * plus the profile's own memory file; every 10th profile also edits CLAUDE.md, which the new
 * version changes too) is synced v1 → v2 on PostgreSQL, timed from the request to
 * `completed`. In the same run, the same merge for GIT_PROFILES profiles with
 * `git merge-tree --write-tree` (one branch per profile, one process per merge).
 * Targets: ≥ 20x git's profiles/s; 100,000 profiles under 60 s on 2 cores.
 *
 * Environment: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test; a fresh
 * database is created beside it and dropped), BENCH_PROFILES (100000), BENCH_GIT_PROFILES (1000).
 */
const PROFILES = Number(process.env.BENCH_PROFILES || 100_000);
const GIT_PROFILES = Number(process.env.BENCH_GIT_PROFILES || 1000);

const claude = (edits: Record<number, string>) => Array.from({ length: 60 }, (_, i) => `${edits[i] ?? `Rule ${i}: be helpful.`}\n`).join('');
function bundle(version: 1 | 2): Record<string, string> {
  const files: Record<string, string> = { 'CLAUDE.md': claude(version === 2 ? { 50: 'Rule 50: be brief.' } : {}) };
  for (let i = 0; i < 17; i++) files[`.claude/skills/skill-${i}/SKILL.md`] = `# Skill ${i}\nDo thing ${i}${version === 2 && i === 3 ? ' better' : ''}.\n`;
  files['.claude/settings.json'] = `${JSON.stringify({ model: version === 2 ? 'opus' : 'sonnet', permissions: { allow: ['Read'] } }, null, 2)}\n`;
  return files;
}
const profileEdit = (i: number) => claude({ 5: `Rule 5: user ${i} prefers French.` });
const sha = (s: string) => `sha256-${createHash('sha256').update(s).digest('hex')}`;

async function call(base: string, key: string, method: string, route: string, body?: unknown): Promise<any> {
  const res = await fetch(`${base}${route}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const json = (await res.json()) as any;
  if (!json.success) throw new Error(`${method} ${route}: ${json.error}`);
  return json.data;
}

async function deploy(base: string, key: string, appId: string, files: Record<string, string>): Promise<any> {
  const up = await call(base, key, 'POST', '/v1/version/upload', { appId, files: Object.entries(files).map(([name, body]) => ({ name, hash: sha(body) })) });
  for (const u of up.uploadUrls) {
    if (!u.exists) await fetch(u.url, { method: 'PUT', headers: u.headers, body: files[u.name] });
  }
  return call(base, key, 'POST', `/v1/version/upload/${up.uploadId}/complete`, { appId, versionId: up.versionId });
}

async function ours(): Promise<{ seconds: number; rate: number; counters: any }> {
  const database = await freshDatabase('sync');
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-sync-'));
  const userKey = newApiKey();
  const config = loadConfig({}, { databaseUrl: database.url, dataDir, port: 0, userKey, secret: 'bench-secret' });
  const running = await start(config, 'all', { listen: true });
  try {
    const base = `http://127.0.0.1:${(running.server!.server.address() as AddressInfo).port}`;
    config.publicUrl = base;
    const org = await call(base, userKey, 'POST', '/v1/organization/create', { name: 'Bench', slug: 'bench' });
    const app = await call(base, org.apiKey, 'POST', '/v1/app/create', { slug: 'bench-app', type: 'claude' });
    const v1 = await deploy(base, org.apiKey, app.id, bundle(1));
    const seedStart = performance.now();
    await seedProfiles(running.ctx, { id: app.id, organizationId: org.id, defaultAccessGroupId: app.defaultAccessGroupId }, v1.id, {
      count: PROFILES,
      editEvery: 10,
      editPath: 'CLAUDE.md',
      editContent: profileEdit,
    });
    console.log(`seeded ${PROFILES} profiles in ${((performance.now() - seedStart) / 1000).toFixed(1)} s`);
    await deploy(base, org.apiKey, app.id, bundle(2));
    const t0 = performance.now();
    const { syncId } = await call(base, org.apiKey, 'POST', '/v1/version/sync', { appId: app.id });
    let sync: any;
    let last = -1;
    for (;;) {
      sync = await call(base, org.apiKey, 'GET', `/v1/sync/${syncId}`);
      if (sync.status === 'completed' || sync.status === 'failed') break;
      if (sync.processed !== last) process.stdout.write(`\r  sync: ${sync.processed}/${sync.total} profiles`);
      last = sync.processed;
      await new Promise((r) => setTimeout(r, 200));
    }
    const seconds = (performance.now() - t0) / 1000;
    process.stdout.write('\n');
    return { seconds, rate: PROFILES / seconds, counters: sync };
  } finally {
    await running.stop();
    await database.drop();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

/** git merge-tree: a repo with main at v2 and one branch per profile off v1. */
async function git(): Promise<{ seconds: number; rate: number }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-bench-git-'));
  const run = (args: string[], input?: string) => execFileSync('git', ['-C', dir, ...args], { input, maxBuffer: 1 << 28 }).toString();
  try {
    run(['init', '-q', '-b', 'main']);
    const write = async (files: Record<string, string>) => {
      for (const [name, body] of Object.entries(files)) {
        await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
        await fs.writeFile(path.join(dir, name), body);
      }
    };
    const env = ['-c', 'user.name=bench', '-c', 'user.email=bench@example.com'];
    await write(bundle(1));
    run(['add', '-A']);
    run([...env, 'commit', '-q', '-m', 'v1']);
    const v1 = run(['rev-parse', 'HEAD']).trim();
    // Profile branches through fast-import: one commit each on top of v1.
    let stream = '';
    for (let i = 0; i < GIT_PROFILES; i++) {
      const memory = `# Memory of user ${i}\n- likes tea\n`;
      stream += `commit refs/heads/profile-${i}\ncommitter bench <b@e.com> 0 +0000\ndata 2\np\nfrom ${v1}\n`;
      stream += `M 100644 inline memory/MEMORY.md\ndata ${Buffer.byteLength(memory)}\n${memory}\n`;
      if (i % 10 === 0) {
        const edit = profileEdit(i);
        stream += `M 100644 inline CLAUDE.md\ndata ${Buffer.byteLength(edit)}\n${edit}\n`;
      }
    }
    run(['fast-import', '--quiet'], stream);
    await write(bundle(2));
    run(['add', '-A']);
    run([...env, 'commit', '-q', '-m', 'v2']);
    const t0 = performance.now();
    for (let i = 0; i < GIT_PROFILES; i++) {
      const res = spawnSync('git', ['-C', dir, 'merge-tree', '--write-tree', 'main', `profile-${i}`]);
      if (res.status !== 0 && res.status !== 1) throw new Error(`git merge-tree failed: ${res.stderr}`);
    }
    const seconds = (performance.now() - t0) / 1000;
    return { seconds, rate: GIT_PROFILES / seconds };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');

export async function run(): Promise<void> {
  console.log(`load average at start: ${load()}`);
  const g = await git();
  console.log(`git merge-tree: ${GIT_PROFILES} profiles in ${g.seconds.toFixed(2)} s = ${g.rate.toFixed(0)} profiles/s`);
  const o = await ours();
  const c = o.counters;
  console.log(`harnesslayer sync: ${PROFILES} profiles in ${o.seconds.toFixed(2)} s = ${o.rate.toFixed(0)} profiles/s`);
  console.log(`  counters: total ${c.total}, updated ${c.updated}, unchanged ${c.unchanged}, conflicted ${c.conflicted}, failed ${c.failed}`);
  console.log(`  ratio: ${(o.rate / g.rate).toFixed(1)}x git's profiles/s (target ≥ 20x); 100k under 60 s: ${o.seconds < 60 ? 'yes' : 'no'}`);
  console.log(`load average at the end: ${load()}`);
}
