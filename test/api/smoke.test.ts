import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapOwner } from '../../src/core/keys.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => t?.close());

describe('server basics', () => {
  it('answers /healthz without a key', async () => {
    const res = await t.call('GET', '/healthz', { key: '' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ success: true, data: { status: 'ok' } });
  });

  it('wraps unknown routes in the envelope', async () => {
    const res = await t.call('GET', '/v1/nothing-here');
    expect(res.status).toBe(404);
    expect(res.body).toMatchObject({ success: false, code: 'not_found' });
  });

  it('creates an organization and an app with its key', async () => {
    const org = await t.org();
    const res = await t.call('POST', '/v1/app/create', { key: org.key, body: { slug: 'demo', type: 'claude' } });
    expect(res.status).toBe(200);
    expect(res.body.data).toMatchObject({ slug: 'demo', name: 'demo', type: 'claude', headVersionId: null, status: 'active' });
  });
});

describe('an operator-chosen HARNESSLAYER_USER_KEY', () => {
  it('may be any dk- key of visible characters, and works as the user key', async () => {
    const own = await startTestServer({ config: { userKey: 'dk-ops-key-1' } });
    try {
      const res = await own.call('POST', '/v1/organization/create', { key: 'dk-ops-key-1', body: { name: 'Ops', slug: 'ops' } });
      expect(res.status).toBe(200);
      expect(res.body.data.apiKey).toMatch(/^dk-[A-Za-z0-9]{40}$/);
      expect((await own.call('GET', '/v1/app/list', { key: 'dk-ops-key-2' })).status).toBe(401);
      await expect(bootstrapOwner(own.ctx, 'dk-has space')).rejects.toThrow(/dk- followed by 1 to 256 visible ASCII characters/);
    } finally {
      await own.close();
    }
  });
});
