import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
