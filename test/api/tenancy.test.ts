import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type ApiReply, type TestServer } from '../helpers/server.js';

/*
 * Organization B holds a valid key and knows every id and slug of organization A. Whatever B
 * tries on A's records — read, list, update, delete, or use them in its own requests — is a
 * 404 shaped exactly like the one for an id that never existed, and A's data stays as it was.
 */

let t: TestServer;
let keyA: string;
let keyB: string;
/** A's records (display ids); channel, session and webhook also by their create replies. */
const a = {} as { app: any; sharedApp: any; group: any; profile: any; channel: any; session: any; webhook: any };
let appB: any;
let profileB: any;

const call = (key: string, method: string, path: string, body?: unknown) => t.call(method, path, { key, body });
const asA = (method: string, path: string, body?: unknown) => call(keyA, method, path, body);
const asB = (method: string, path: string, body?: unknown) => call(keyB, method, path, body);

function created(res: ApiReply, what: string): any {
  if (res.status !== 200) throw new Error(`${what}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.data;
}

beforeAll(async () => {
  t = await startTestServer();
  keyA = (await t.org()).key;
  keyB = (await t.org()).key;
  a.app = created(await asA('POST', '/v1/app/create', { slug: 'alpha-app', type: 'claude' }), 'A app');
  a.sharedApp = created(await asA('POST', '/v1/app/create', { slug: 'shared-slug', type: 'claude' }), 'A shared app');
  a.group = created(await asA('POST', '/v1/access_group/create', { appId: a.app.id, name: 'Gold', limit: 10, limitReset: 'monthly' }), 'A group');
  a.profile = created(await asA('POST', '/v1/profile/create', { appId: a.app.id, identifier: 'alice', accessGroupId: a.group.id }), 'A profile');
  // Written concurrently with this file: when they fail, only their own tests fail.
  a.channel = (await asA('POST', '/v1/channel/create', { appId: a.app.id, slug: 'main', type: 'api' })).body.data;
  a.session = (await asA('POST', '/v1/session/create', { appId: a.app.id, type: 'single' })).body.data;
  a.webhook = (await asA('POST', '/v1/webhook/create', { appId: a.app.id, event: 'profile.created', url: 'https://example.com/hook' })).body.data;
  appB = created(await asB('POST', '/v1/app/create', { slug: 'bravo-app', type: 'claude' }), 'B app');
  profileB = created(await asB('POST', '/v1/profile/create', { appId: appB.id, identifier: 'bob' }), 'B profile');
});
afterAll(async () => t?.close());

/** Everything A can see of its own data, as A sees it. */
async function viewOfA(): Promise<unknown[]> {
  const paths = [
    `/v1/app/${a.app.id}`, `/v1/app/${a.sharedApp.id}`, '/v1/app/list?pageSize=100',
    `/v1/access_group/${a.group.id}`, `/v1/access_group/list?appId=${a.app.id}`,
    `/v1/profile/${a.profile.id}`, `/v1/profile/list?appId=${a.app.id}`,
    `/v1/channel/${a.channel?.id}`, `/v1/channel/list?appId=${a.app.id}`,
    `/v1/session/${a.session?.id}`, `/v1/session/list?appId=${a.app.id}`,
    `/v1/webhook/${a.webhook?.id}`, `/v1/webhook/list?appId=${a.app.id}`,
  ];
  return Promise.all(
    paths.map(async (path) => {
      const { status, body } = await asA('GET', path);
      return { path, status, body };
    }),
  );
}

/**
 * Runs B's attempts: each must be a 404 whose error reads like the one for an id that never
 * existed (so B learns nothing), and afterwards A's data must be unchanged.
 */
async function expectHiddenFromB(attempts: [method: string, path: string, body?: unknown][]): Promise<void> {
  const before = await viewOfA();
  for (const [method, path, body] of attempts) {
    const res = await asB(method, path, body);
    expect(res.status, `${method} ${path} ${JSON.stringify(body ?? '')}: ${JSON.stringify(res.body)}`).toBe(404);
    expect(res.body).toMatchObject({ success: false, code: 'not_found' });
    const refs = [a.app, a.sharedApp, a.group, a.profile, a.channel, a.session, a.webhook].flatMap((r) => (r ? [r.id] : []));
    const used = [...refs, a.app.defaultAccessGroupId, 'alpha-app', 'alice'].find((ref) => `${path} ${JSON.stringify(body ?? '')}`.includes(ref));
    if (used) {
      // The same request naming a record that never existed must read the same.
      const ghost = `${used.split('-')[0]}-doesnotexist0000`;
      const swap = (text: string) => text.replaceAll(used, ghost);
      const twin = await asB(method, swap(path), body === undefined ? undefined : JSON.parse(swap(JSON.stringify(body))));
      expect(`${twin.status} ${twin.body.error.replaceAll(ghost, '<id>')}`, `${method} ${path} reveals more than an unknown id`).toBe(
        `${res.status} ${res.body.error.replaceAll(used, '<id>')}`,
      );
    }
  }
  expect(await viewOfA()).toEqual(before);
}

/** B's list endpoints show none of A's records. */
async function expectNotListedForB(path: string, ids: string[]): Promise<void> {
  const res = await asB('GET', path);
  expect(res.status, path).toBe(200);
  const listed = (res.body.data.items as { id: string }[]).map((i) => i.id);
  for (const id of ids) expect(listed, path).not.toContain(id);
}

describe("organization B cannot reach organization A's records", () => {
  it('apps, by id and by slug; the same slug may exist in both organizations', async () => {
    const sharedB = created(await asB('POST', '/v1/app/create', { slug: 'shared-slug', type: 'openclaw' }), 'B shared app');
    expect(sharedB.id).not.toBe(a.sharedApp.id);
    expect((await asB('GET', '/v1/app/shared-slug')).body.data).toMatchObject({ id: sharedB.id, type: 'openclaw' });
    expect((await asA('GET', '/v1/app/shared-slug')).body.data).toMatchObject({ id: a.sharedApp.id, type: 'claude' });

    await expectNotListedForB('/v1/app/list?pageSize=100', [a.app.id, a.sharedApp.id]);
    for (const ref of [a.app.id, 'alpha-app']) {
      await expectHiddenFromB([
        ['GET', `/v1/app/${ref}`],
        ['PATCH', `/v1/app/${ref}`, { name: 'taken over' }],
        ['PATCH', `/v1/app/${ref}`, {}],
        ['DELETE', `/v1/app/${ref}`],
        ['GET', `/v1/app/list?appId=${ref}`],
      ]);
    }
    // B's own app by A's shared-slug id: still A's, still hidden.
    await expectHiddenFromB([['GET', `/v1/app/${a.sharedApp.id}`], ['DELETE', `/v1/app/${a.sharedApp.id}`]]);
  });

  it("A's appId in any list or create of B is a 404", async () => {
    const lists = ['access_group', 'profile', 'channel', 'session', 'webhook', 'version', 'instance', 'sync', 'conflict', 'history'];
    for (const ref of [a.app.id, 'alpha-app']) {
      await expectHiddenFromB([
        ...lists.map((r): [string, string] => ['GET', `/v1/${r}/list?appId=${ref}`]),
        ['POST', '/v1/access_group/create', { appId: ref, name: 'x', limit: 1, limitReset: 'daily' }],
        ['POST', '/v1/profile/create', { appId: ref, identifier: 'mallory' }],
        ['POST', '/v1/channel/create', { appId: ref, slug: 'sneaky', type: 'api' }],
        ['POST', '/v1/session/create', { appId: ref, type: 'single' }],
        ['POST', '/v1/webhook/create', { appId: ref, event: 'profile.created', url: 'https://example.com/steal' }],
      ]);
    }
  });

  it('access groups', async () => {
    await expectNotListedForB(`/v1/access_group/list?appId=${appB.id}`, [a.group.id, a.app.defaultAccessGroupId]);
    for (const id of [a.group.id, a.app.defaultAccessGroupId]) {
      await expectHiddenFromB([
        ['GET', `/v1/access_group/${id}`],
        ['PATCH', `/v1/access_group/${id}`, { limit: null }],
        ['DELETE', `/v1/access_group/${id}`],
      ]);
    }
  });

  it('profiles, by id and by identifier with appId; A\'s accessGroupId in B\'s profiles', async () => {
    await expectNotListedForB(`/v1/profile/list?appId=${appB.id}`, [a.profile.id]);
    await expectHiddenFromB([
      ['GET', `/v1/profile/${a.profile.id}`],
      ['PATCH', `/v1/profile/${a.profile.id}`, { metadata: { owned: true } }],
      ['DELETE', `/v1/profile/${a.profile.id}`],
      ['GET', `/v1/profile/alice?appId=${a.app.id}`],
      ['GET', '/v1/profile/alice?appId=alpha-app'],
      ['PATCH', `/v1/profile/alice?appId=${a.app.id}`, { identifier: 'eve' }],
      ['DELETE', `/v1/profile/alice?appId=${a.app.id}`],
      // B's own app does not make A's profile id resolve either.
      ['GET', `/v1/profile/${a.profile.id}?appId=${appB.id}`],
      ['POST', '/v1/profile/create', { appId: appB.id, identifier: 'carol', accessGroupId: a.group.id }],
      ['PATCH', `/v1/profile/${profileB.id}`, { accessGroupId: a.group.id }],
      ['GET', `/v1/state/list?profileId=${a.profile.id}`],
    ]);
    expect((await asB('GET', '/v1/profile/carol?appId=bravo-app')).status).toBe(404);
  });

  it('channels, by id and by slug with appId', async () => {
    expect(a.channel?.id, 'A could not create a channel').toBeDefined();
    await expectNotListedForB(`/v1/channel/list?appId=${appB.id}`, [a.channel.id]);
    await expectHiddenFromB([
      ['GET', `/v1/channel/${a.channel.id}`],
      ['PATCH', `/v1/channel/${a.channel.id}`, { name: 'taken over' }],
      ['DELETE', `/v1/channel/${a.channel.id}`],
      ['GET', `/v1/channel/main?appId=${a.app.id}`],
    ]);
  });

  it('sessions', async () => {
    expect(a.session?.id, 'A could not create a session').toBeDefined();
    await expectNotListedForB(`/v1/session/list?appId=${appB.id}`, [a.session.id]);
    await expectHiddenFromB([
      ['GET', `/v1/session/${a.session.id}`],
      ['DELETE', `/v1/session/${a.session.id}`],
    ]);
  });

  it('webhooks', async () => {
    expect(a.webhook?.id, 'A could not create a webhook').toBeDefined();
    await expectNotListedForB(`/v1/webhook/list?appId=${appB.id}`, [a.webhook.id]);
    await expectHiddenFromB([
      ['GET', `/v1/webhook/${a.webhook.id}`],
      ['POST', '/v1/webhook/update', { webhookId: a.webhook.id, url: 'https://example.com/steal' }],
      ['POST', '/v1/webhook/update', { id: a.webhook.id, runCount: 0 }],
      ['DELETE', `/v1/webhook/${a.webhook.id}`],
    ]);
  });

  it("A still sees all of its own records afterwards", async () => {
    for (const row of await viewOfA()) expect((row as { status: number }).status, JSON.stringify(row)).toBe(200);
  });
});
