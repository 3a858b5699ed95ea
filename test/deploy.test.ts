import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { download } from './files/bundle.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let t: TestServer;
let folder: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true });
  folder = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-deploy-'));
});
afterAll(async () => {
  await t?.close();
  await fs.rm(folder, { recursive: true, force: true });
});

async function write(files: Record<string, string>) {
  for (const [name, body] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(folder, name)), { recursive: true });
    await fs.writeFile(path.join(folder, name), body);
  }
}

async function deploy(key: string, app: string) {
  const child = spawn(process.execPath, [path.resolve('bin/harnesslayer.mjs'), 'deploy', folder, '--app', app], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, HARNESSLAYER_URL: t.url, HARNESSLAYER_API_KEY: key },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const [code] = await once(child, 'exit');
  return { code, stdout, stderr };
}

describe('harnesslayer deploy', () => {
  it('uploads a folder as the next version, skipping ignored files and content already stored', async () => {
    const org = await t.org();
    await t.call('POST', '/v1/app/create', { key: org.key, body: { slug: 'deployed', type: 'claude' } });
    await write({
      'CLAUDE.md': '# Agent\n',
      '.claude/settings.json': '{"model":"sonnet"}\n',
      '.claude/skills/a/SKILL.md': 'skill a\n',
      'notes/draft.tmp': 'ignored\n',
      'secrets/key.txt': 'ignored too\n',
      '.harnesslayerignore': '*.tmp\nsecrets/\n',
    });
    const first = await deploy(org.key, 'deployed');
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/Deployed version 1 \(.+\): 3 files, .*uploaded 3, already stored 0/);

    const app = (await t.call('GET', '/v1/app/deployed', { key: org.key })).body.data;
    const url = (await t.call('GET', `/v1/version/download/${app.headVersionId}`, { key: org.key })).body.data.url;
    const files = await download(url);
    expect(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, v.toString()]))).toEqual({
      'CLAUDE.md': '# Agent\n',
      '.claude/settings.json': '{"model":"sonnet"}\n',
      '.claude/skills/a/SKILL.md': 'skill a\n',
    });

    await write({ 'CLAUDE.md': '# Agent v2\n' });
    const second = await deploy(org.key, 'deployed');
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/Deployed version 2 .*uploaded 1, already stored 2/);
  });

  it('says what is wrong: an invalid settings file, a missing key', async () => {
    const org = await t.org();
    await t.call('POST', '/v1/app/create', { key: org.key, body: { slug: 'broken', type: 'claude' } });
    await write({ '.claude/settings.json': '{not json' });
    const res = await deploy(org.key, 'broken');
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('.claude/settings.json');
    const none = await deploy('', 'broken');
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('HARNESSLAYER_API_KEY');
  });
});
