import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { materialize } from '../../src/runtime/workspace.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { deploy, hex, type Bundle } from './bundle.js';

// A turn's working directory is written from the profile's head state: small text from the
// database (one query for all of it), everything else from the blob store.

let t: TestServer;
let work: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true });
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-materialize-'));
});
afterAll(async () => {
  await t?.close();
  await fs.rm(work, { recursive: true, force: true });
});

describe('materialize', () => {
  it('writes every file of the head byte for byte, inline or not', async () => {
    const { key } = await t.org();
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'workspace', type: 'openclaw' } })).body.data.id;
    const files: Bundle = {
      'AGENTS.md': '# Agent\n',
      'notes/today.md': 'remember this\n'.repeat(50),
      'assets/icon.png': Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0]), randomBytes(3000)]),
      'data/big.json': JSON.stringify({ rows: 'x'.repeat(100 * 1024) }),
    };
    await deploy(t, key, appId, files);
    const profile = (await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier: 'reader' } })).body.data;
    const inline = await t.ctx.db.selectFrom('blobs').select('hash').where('hash', 'in', Object.values(files).map(hex)).where('data', 'is not', null).execute();
    expect(inline.map((r) => r.hash).sort()).toEqual([hex(files['AGENTS.md']), hex(files['notes/today.md'])].sort()); // both kinds are covered

    const cwd = path.join(work, 'turn-1');
    const ws = await materialize(t.ctx, profile.id, cwd);
    expect([...ws.start.keys()].sort()).toEqual(Object.keys(files).sort());
    for (const [name, body] of Object.entries(files)) expect((await fs.readFile(path.join(cwd, name))).equals(Buffer.from(body)), name).toBe(true);
  });
});
