import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../files/bundle.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

// No workers: runs stay queued, only their admission (the usage charge) is exercised.
let t: TestServer;
let key: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true, role: 'api' });
  key = (await t.org()).key;
});
afterAll(async () => t?.close());

/**
 * Runs `request` with `step` done just before its first transaction opens: a concurrent
 * request landing between the run's profile lookup and its transaction (PGlite runs one
 * transaction at a time, so this is how the test gets that order).
 */
async function withStepBeforeTransaction<T>(step: () => Promise<unknown>, request: () => Promise<T>): Promise<T> {
  const events = t.ctx.events;
  const transaction = events.transaction.bind(events);
  let done = false;
  events.transaction = (async (...args: Parameters<typeof transaction>) => {
    if (!done) {
      done = true;
      await step();
    }
    return transaction(...args);
  }) as typeof events.transaction;
  try {
    return await request();
  } finally {
    events.transaction = transaction;
  }
}

describe('usage limit when the profile changes access group while a run is being admitted', () => {
  it('charges the run against the group the profile is in when the run commits', async () => {
    // Default group: unlimited. Group "one": 1 run a day.
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'stale-group', type: 'claude' } })).body.data;
    await deploy(t, key, app.id, { 'CLAUDE.md': 'hi\n' });
    const ch = (await t.call('POST', '/v1/channel/create', { key, body: { appId: app.id, slug: 'api', type: 'api' } })).body.data;
    const one = (await t.call('POST', '/v1/access_group/create', { key, body: { appId: app.id, name: 'one', limit: 1, limitReset: 'daily', limitMessage: 'one a day' } })).body.data;

    // First run while in the unlimited default group: used = 1 today.
    const first = await t.call('POST', '/v1/response/run', { key, body: { appId: app.id, channelId: ch.id, userId: 'u', input: 'a' } });
    expect(first.status).toBe(200);
    const profileId = first.body.data.profileId;

    // A PATCH that moves the profile to "one" lands between the run's profile lookup and its
    // transaction (as a concurrent request can): simulated by running it just before the
    // run's transaction starts.
    const second = await withStepBeforeTransaction(
      async () => expect((await t.call('PATCH', `/v1/profile/${profileId}`, { key, body: { accessGroupId: one.id } })).status).toBe(200),
      () => t.call('POST', '/v1/response/run', { key, body: { appId: app.id, channelId: ch.id, userId: 'u', input: 'b' } }),
    );

    const profile = (await t.call('GET', `/v1/profile/${profileId}`, { key })).body.data;
    expect(profile.accessGroupId).toBe(one.id);
    // CONTRACT §7: "Under any concurrency a profile never runs more than `limit` times in a period."
    expect(second.status, JSON.stringify(second.body)).toBe(429);
    expect(profile.usage.used).toBeLessThanOrEqual(profile.usage.limit);
  });

  it('a run admitted while its group is being deleted is charged against the default group it lands in', async () => {
    // Default group: 1 run a day. Group "vip": 100 a day.
    const app = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'deleted-group', type: 'claude', limit: { amount: 1, interval: 'daily', message: 'one a day' } } })).body.data;
    await deploy(t, key, app.id, { 'CLAUDE.md': 'hi\n' });
    const ch = (await t.call('POST', '/v1/channel/create', { key, body: { appId: app.id, slug: 'api', type: 'api' } })).body.data;
    const vip = (await t.call('POST', '/v1/access_group/create', { key, body: { appId: app.id, name: 'vip', limit: 100, limitReset: 'daily' } })).body.data;
    const p = (await t.call('POST', '/v1/profile/create', { key, body: { appId: app.id, identifier: 'w', accessGroupId: vip.id } })).body.data;
    expect((await t.call('POST', '/v1/response/run', { key, body: { appId: app.id, channelId: ch.id, userId: 'w', input: 'a' } })).status).toBe(200);

    const second = await withStepBeforeTransaction(
      async () => expect((await t.call('DELETE', `/v1/access_group/${vip.id}`, { key })).status).toBe(200),
      () => t.call('POST', '/v1/response/run', { key, body: { appId: app.id, channelId: ch.id, userId: 'w', input: 'b' } }),
    );

    const profile = (await t.call('GET', `/v1/profile/${p.id}`, { key })).body.data;
    expect(profile.accessGroupId).toBe(app.defaultAccessGroupId);
    expect(second.status, JSON.stringify(second.body)).toBe(429);
    expect(profile.usage.used).toBeLessThanOrEqual(profile.usage.limit);
  });
});
