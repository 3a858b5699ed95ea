import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../files/bundle.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { client } from './helpers.js';

// The server runs no workers: the profile deletion job never runs here, so what the test
// sees is what the deletion request itself did.

let t: TestServer;
let api: ReturnType<typeof client>;
let key: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true, role: 'api' });
  key = (await t.org()).key;
  api = client(t, key);
});
afterAll(async () => t?.close());

describe('deleting a profile, then the same user runs again', () => {
  it('the deletion request ends the profile\'s sessions and turns: the next run starts a new conversation under the same id', async () => {
    const appId = (await api.call('POST', '/v1/app/create', { slug: 'rerun', type: 'claude' })).body.data.id;
    await deploy(t, key, appId, { 'CLAUDE.md': '# rerun\n' });
    const channelId = (await api.call('POST', '/v1/channel/create', { appId, slug: 'api', type: 'api' })).body.data.id;
    const before = (await api.run({ appId, channelId, userId: 'kim', input: 'first', sessionId: 'kim-1' })).body.data;
    expect(before.status).toBe('queued');

    expect((await api.call('DELETE', `/v1/profile/${before.profileId}`)).body.data).toEqual({ id: before.profileId, status: 'deleting' });
    expect((await api.call('GET', '/v1/session/kim-1')).status).toBe(404);
    expect((await api.instance(before.instanceId)).status).toBe('stopped');

    const after = await api.run({ appId, channelId, userId: 'kim', input: 'again', sessionId: 'kim-1' });
    expect(after.status, JSON.stringify(after.body)).toBe(200);
    expect(after.body.data.profileId).not.toBe(before.profileId);
    expect((await api.call('GET', '/v1/session/kim-1')).body.data).toMatchObject({ profileId: after.body.data.profileId });
  });
});
