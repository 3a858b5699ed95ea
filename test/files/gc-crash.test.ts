import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy, download, hex } from './bundle.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ listen: true });
});
afterAll(async () => t?.close());

describe('a deletion that dies after removing stored bytes', () => {
  it('leaves no blob row whose bytes are gone: the same content uploaded again is stored again, and the retried job keeps it', async () => {
    const { key } = await t.org();
    const content = randomBytes(100_000); // in the store, not inline in the database
    const doomed = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'doomed', type: 'claude' } })).body.data;
    await deploy(t, key, doomed.id, { 'CLAUDE.md': '# doomed\n', 'data.bin': content });

    // The deletion job dies once right after the bytes went (a crash of its process, as far
    // as the database can tell: its transaction ends without a commit).
    const store = t.ctx.blobs;
    const realDelete = store.delete.bind(store);
    let died!: () => void;
    const hasDied = new Promise<void>((resolve) => (died = resolve));
    let crashes = 1;
    store.delete = async (hashes: string[]) => {
      await realDelete(hashes);
      if (crashes-- > 0) {
        died();
        throw new Error('the process died here');
      }
    };
    try {
      expect((await t.call('DELETE', `/v1/app/${doomed.id}`, { key })).status).toBe(200);
      await hasDied;

      // Before the job is retried, another app of the organization uploads the same content.
      const again = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'again', type: 'claude' } })).body.data;
      const up = await t.call('POST', '/v1/version/upload', { key, body: { appId: again.id, files: [{ name: 'data.bin', hash: `sha256-${hex(content)}` }] } });
      expect(up.body.data.uploadUrls[0].exists).toBe(false); // its bytes are gone: it must be sent
      const version = await deploy(t, key, again.id, { 'CLAUDE.md': '# again\n', 'data.bin': content });
      const url = async () => (await t.call('GET', `/v1/version/download/${version.id}`, { key })).body.data.url as string;
      expect((await download(await url()))['data.bin'].equals(content)).toBe(true);

      // The retried deletion finishes and leaves the content the other app uses.
      await eventually(async () => (await t.call('GET', `/v1/app/${doomed.id}`, { key })).status === 404, 'the deletion to finish', 30_000);
      expect((await download(await url()))['data.bin'].equals(content)).toBe(true);
    } finally {
      store.delete = realDelete;
    }
  });
});
