import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey } from '../../src/core/keys.js';
import { sha256Hex } from '../../src/core/secrets.js';
import { canonicalJson } from '../../src/server/idempotency.js';
import { deploy } from '../files/bundle.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
let key: string;
beforeAll(async () => {
  t = await startTestServer({ listen: true });
  key = (await t.org()).key;
});
afterAll(async () => t?.close());

const post = (path: string, body: unknown, k = key) => t.call('POST', path, { key: k, body });
const get = (path: string, k = key) => t.call('GET', path, { key: k });
const patch = (path: string, body: unknown, k = key) => t.call('PATCH', path, { key: k, body });
const del = (path: string, k = key) => t.call('DELETE', path, { key: k });

describe('organizations', () => {
  it('creates with a key shown once, returnIfExist returns it without a key, a taken slug is 409', async () => {
    const created = await t.call('POST', '/v1/organization/create', { body: { name: 'Acme', slug: 'acme-co' } });
    expect(created.status).toBe(200);
    expect(created.body.data).toMatchObject({ slug: 'acme-co', name: 'Acme' });
    expect(created.body.data.id).toMatch(/^org-/);
    expect(created.body.data.apiKey).toMatch(/^dk-[A-Za-z0-9]{40}$/);

    const again = await t.call('POST', '/v1/organization/create', { body: { name: 'Acme', slug: 'acme-co', returnIfExist: true } });
    expect(again.status).toBe(200);
    expect(again.body.data.id).toBe(created.body.data.id);
    expect(again.body.data.apiKey).toBeUndefined();

    const taken = await t.call('POST', '/v1/organization/create', { body: { name: 'Acme', slug: 'acme-co' } });
    expect(taken.status).toBe(409);
    expect(taken.body).toMatchObject({ success: false, code: 'slug_taken' });
  });

  it("refuses another owner's slug even with returnIfExist", async () => {
    const { createUser } = await import('../../src/core/keys.js');
    const second = await createUser(t.ctx, 'second@example.com');
    await t.call('POST', '/v1/organization/create', { body: { name: 'Mine', slug: 'mine-only' } });
    const res = await t.call('POST', '/v1/organization/create', { key: second.apiKey, body: { name: 'x', slug: 'mine-only', returnIfExist: true } });
    expect(res.status).toBe(409);
    // Nor can that user rename it: it is not theirs (404, never revealed).
    const upd = await t.call('PATCH', '/v1/organization/mine-only', { key: second.apiKey, body: { name: 'stolen' } });
    expect(upd.status).toBe(404);
  });

  it('user create for an email that has a user gives that user a new key: a lost key is recovered', async () => {
    const { createUser } = await import('../../src/core/keys.js');
    const first = await createUser(t.ctx, 'lost@example.com');
    const org = (await t.call('POST', '/v1/organization/create', { key: first.apiKey, body: { name: 'Lost', slug: 'lost-key-org' } })).body.data;
    const again = await createUser(t.ctx, 'lost@example.com');
    expect(again).toMatchObject({ userId: first.userId, existed: true });
    expect(again.apiKey).not.toBe(first.apiKey);
    for (const key of [again.apiKey, first.apiKey]) {
      expect((await t.call('PATCH', `/v1/organization/${org.id}`, { key, body: { name: 'Found' } })).status).toBe(200);
    }
    expect((await createUser(t.ctx, null)).existed).toBe(false);
  });

  it('updates name and slug by id or slug; {} changes nothing', async () => {
    const org = (await t.call('POST', '/v1/organization/create', { body: { name: 'Old', slug: 'old-slug' } })).body.data;
    const byId = await t.call('PATCH', `/v1/organization/${org.id}`, { body: { name: 'New' } });
    expect(byId.body.data).toMatchObject({ id: org.id, name: 'New', slug: 'old-slug' });
    const bySlug = await t.call('PATCH', '/v1/organization/old-slug', { body: { slug: 'new-slug' } });
    expect(bySlug.body.data.slug).toBe('new-slug');
    const empty = await t.call('PATCH', '/v1/organization/new-slug', { body: {} });
    expect(empty.status).toBe(200);
    expect(empty.body.data).toMatchObject({ name: 'New', slug: 'new-slug' });
    const collide = await t.call('PATCH', '/v1/organization/new-slug', { body: { slug: 'acme-co' } });
    expect(collide.status).toBe(409);
  });

  it('keys: none → 401, unknown → 401, org key on organization endpoints → 403, user key elsewhere → 403', async () => {
    expect((await t.call('POST', '/v1/organization/create', { key: '', body: { name: 'a', slug: 'a' } })).status).toBe(401);
    expect((await t.call('POST', '/v1/organization/create', { key: 'dk-unknownunknownunknownunknownunknown1234', body: { name: 'a', slug: 'a' } })).status).toBe(401);
    const forbidden = await t.call('POST', '/v1/organization/create', { key, body: { name: 'a', slug: 'a' } });
    expect(forbidden.status).toBe(403);
    expect(forbidden.body.success).toBe(false);
    expect((await t.call('GET', '/v1/app/list', { key: t.userKey })).status).toBe(403);
  });

  it('validates slugs and names', async () => {
    for (const slug of ['Upper', 'a--b', '-a', 'a-', 'a_b', '', 'x'.repeat(65)]) {
      const res = await t.call('POST', '/v1/organization/create', { body: { name: 'n', slug } });
      expect(res.status, slug).toBe(400);
    }
    expect((await t.call('POST', '/v1/organization/create', { body: { name: '', slug: 'ok-slug' } })).status).toBe(400);
    expect((await t.call('POST', '/v1/organization/create', { body: { name: 'x'.repeat(257), slug: 'ok-slug' } })).status).toBe(400);
  });
});

describe('apps', () => {
  it('creates with defaults, a default unlimited access group, and masked credentials', async () => {
    const res = await post('/v1/app/create', {
      slug: 'agent',
      type: 'claude',
      name: 'Agent',
      credentials: [{ type: 'static_bearer', mcp_server_url: 'https://mcp.example.com/mcp', token: 'lin_api_secret_token_1234' }],
    });
    expect(res.status).toBe(200);
    const app = res.body.data;
    expect(app).toMatchObject({ slug: 'agent', name: 'Agent', type: 'claude', status: 'active', headVersionId: null });
    expect(app.credentials).toEqual([{ type: 'static_bearer', mcp_server_url: 'https://mcp.example.com/mcp', token: 'lin_...1234' }]);
    const group = await get(`/v1/access_group/${app.defaultAccessGroupId}`);
    expect(group.body.data).toMatchObject({ appId: app.id, isDefault: true, limit: null });
    // At rest the token is encrypted, not stored in the clear.
    const row = await t.ctx.db.selectFrom('apps').select('credentials').where('id', '=', app.id).executeTakeFirstOrThrow();
    expect(row.credentials).not.toContain('lin_api_secret_token_1234');
  });

  it('limit creates a limited default group; returnIfExist; slug collision 409; get by id or slug', async () => {
    const res = await post('/v1/app/create', { slug: 'limited', type: 'openclaw', limit: { amount: 5, interval: 'daily', message: 'Out of credits' } });
    const app = res.body.data;
    const group = (await get(`/v1/access_group/${app.defaultAccessGroupId}`)).body.data;
    expect(group).toMatchObject({ limit: 5, limitReset: 'daily', limitMessage: 'Out of credits', isDefault: true });
    expect((await post('/v1/app/create', { slug: 'limited', type: 'claude' })).status).toBe(409);
    const again = await post('/v1/app/create', { slug: 'limited', type: 'claude', returnIfExist: true });
    expect(again.status).toBe(200);
    expect(again.body.data.id).toBe(app.id);
    expect((await get(`/v1/app/${app.id}`)).body.data.slug).toBe('limited');
    expect((await get('/v1/app/limited')).body.data.id).toBe(app.id);
    expect((await get('/v1/app/app-doesnotexist0000')).status).toBe(404);
  });

  it('rejects unknown type, wrong types and unknown fields', async () => {
    expect((await post('/v1/app/create', { slug: 'x1', type: 'gpt' })).status).toBe(400);
    expect((await post('/v1/app/create', { slug: 'x1' })).status).toBe(400);
    const unknown = await post('/v1/app/create', { slug: 'x1', type: 'claude', colour: 'red' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toContain('colour');
    expect((await post('/v1/app/create', { slug: 'x1', type: 'claude', limit: { amount: '3', interval: 'daily' } })).status).toBe(400);
    expect((await post('/v1/app/create', { slug: 'x1', type: 'claude', limit: { amount: 0, interval: 'daily' } })).status).toBe(400);
    expect((await post('/v1/app/create', { slug: 'x1', type: 'claude', limit: { amount: 1.5, interval: 'daily' } })).status).toBe(400);
    expect((await post('/v1/app/create', { slug: 'x1', type: 'claude', limit: { amount: 2 ** 31, interval: 'daily' } })).status).toBe(400);
    expect((await get('/v1/app/x1')).status).toBe(404);
  });

  it('updates slug and name partially; {} is a no-op', async () => {
    const app = (await post('/v1/app/create', { slug: 'rename-me', type: 'claude' })).body.data;
    const upd = await patch(`/v1/app/${app.id}`, { slug: 'renamed' });
    expect(upd.body.data).toMatchObject({ slug: 'renamed', name: 'rename-me' });
    expect((await patch('/v1/app/renamed', {})).body.data.slug).toBe('renamed');
    expect((await patch('/v1/app/renamed', { slug: 'agent' })).status).toBe(409);
  });

  it('lists newest first with pagination and the true total', async () => {
    const org = await t.org();
    for (const slug of ['a1', 'a2', 'a3']) await post('/v1/app/create', { slug, type: 'claude' }, org.key);
    const p1 = await get('/v1/app/list?pageSize=2', org.key);
    expect(p1.body.data).toMatchObject({ page: 1, pageSize: 2, total: 3 });
    expect(p1.body.data.items.map((a: any) => a.slug)).toEqual(['a3', 'a2']);
    const p2 = await get('/v1/app/list?page=2&pageSize=2', org.key);
    expect(p2.body.data.items.map((a: any) => a.slug)).toEqual(['a1']);
    const past = await get('/v1/app/list?page=9', org.key);
    expect(past.body.data).toMatchObject({ items: [], total: 3 });
    for (const far of ['2147483648', String(Number.MAX_SAFE_INTEGER)]) {
      expect((await get(`/v1/app/list?page=${far}&pageSize=100`, org.key)).body.data).toMatchObject({ items: [], total: 3, page: Number(far) });
    }
    const filtered = await get('/v1/app/list?appId=a2', org.key);
    expect(filtered.body.data.items.map((a: any) => a.slug)).toEqual(['a2']);
    for (const bad of ['page=0', 'page=-1', 'pageSize=101', 'pageSize=0', 'pageSize=1.5', 'page=abc']) {
      expect((await get(`/v1/app/list?${bad}`, org.key)).status, bad).toBe(400);
    }
  });

  it('delete answers deleting at once, leaves lists, frees the slug, then 404', async () => {
    const org = await t.org();
    const app = (await post('/v1/app/create', { slug: 'doomed', type: 'claude' }, org.key)).body.data;
    await post('/v1/profile/create', { appId: app.id, identifier: 'u1' }, org.key);
    // Sent as clients that set Content-Type: application/json on every call send it: no body.
    const res = await t.call('DELETE', `/v1/app/${app.id}`, { key: org.key, headers: { 'content-type': 'application/json' } });
    expect(res.body.data).toEqual({ id: app.id, status: 'deleting' });
    expect((await get('/v1/app/list', org.key)).body.data.total).toBe(0);
    await eventually(async () => (await get(`/v1/app/${app.id}`, org.key)).status === 404, 'app deletion job');
    const profiles = await t.ctx.db.selectFrom('profiles').select('id').where('appId', '=', app.id).execute();
    expect(profiles).toEqual([]);
    expect((await post('/v1/app/create', { slug: 'doomed', type: 'claude' }, org.key)).status).toBe(200);
  });
});

describe('access groups', () => {
  it('create, get, list, update (limit null = unlimited), delete moves profiles to the default group', async () => {
    const app = (await post('/v1/app/create', { slug: 'groups', type: 'claude' })).body.data;
    const created = await post('/v1/access_group/create', { appId: 'groups', name: 'Pro', limit: 100, limitReset: 'monthly', limitMessage: 'Upgrade' });
    expect(created.status).toBe(200);
    const g = created.body.data;
    expect(g).toMatchObject({ appId: app.id, name: 'Pro', limit: 100, limitReset: 'monthly', limitMessage: 'Upgrade', isDefault: false });
    expect(g.id).toMatch(/^ag-/);
    const list = await get(`/v1/access_group/list?appId=${app.id}`);
    expect(list.body.data.total).toBe(2);
    expect((await patch(`/v1/access_group/${g.id}`, { limit: null })).body.data.limit).toBeNull();
    expect((await patch(`/v1/access_group/${g.id}`, { limit: 7, limitReset: 'yearly' })).body.data).toMatchObject({ limit: 7, limitReset: 'yearly' });
    expect((await patch(`/v1/access_group/${g.id}`, {})).body.data.name).toBe('Pro');
    expect((await patch(`/v1/access_group/${g.id}`, { limitReset: 'weekly' })).status).toBe(400);
    expect((await post('/v1/access_group/create', { appId: app.id, name: 'x', limit: 0, limitReset: 'daily' })).status).toBe(400);
    expect((await post('/v1/access_group/create', { appId: app.id, name: 'x', limitReset: 'daily' })).status).toBe(400);

    const profile = (await post('/v1/profile/create', { appId: app.id, identifier: 'pro-user', accessGroupId: g.id })).body.data;
    expect(profile.accessGroupId).toBe(g.id);
    expect(profile.usage).toMatchObject({ used: 0, limit: 7 });
    expect(new Date(profile.usage.resetsAt).toISOString()).toBe(`${new Date().getUTCFullYear() + 1}-01-01T00:00:00.000Z`);

    expect((await del(`/v1/access_group/${app.defaultAccessGroupId}`)).status).toBe(400);
    expect((await del(`/v1/access_group/${g.id}`)).body.data).toEqual({ id: g.id, deleted: true });
    expect((await get(`/v1/access_group/${g.id}`)).status).toBe(404);
    const moved = await get(`/v1/profile/${profile.id}`);
    expect(moved.body.data.accessGroupId).toBe(app.defaultAccessGroupId);
    expect(moved.body.data.usage).toEqual({ used: 0, limit: null, resetsAt: null });
  });
});

describe('profiles', () => {
  it('create, get by id or identifier, update, metadata null clears, returnIfExist, delete', async () => {
    const app = (await post('/v1/app/create', { slug: 'profiles', type: 'claude' })).body.data;
    const res = await post('/v1/profile/create', { appId: 'profiles', identifier: 'alice@example.com', metadata: { plan: 'free' } });
    expect(res.status).toBe(200);
    const p = res.body.data;
    expect(p).toMatchObject({ appId: app.id, identifier: 'alice@example.com', accessGroupId: app.defaultAccessGroupId, metadata: { plan: 'free' }, headStateId: null, baseVersionId: null, usage: { used: 0, limit: null, resetsAt: null } });
    expect(p.id).toMatch(/^prof-/);
    expect((await post('/v1/profile/create', { appId: app.id, identifier: 'alice@example.com' })).status).toBe(409);
    expect((await post('/v1/profile/create', { appId: app.id, identifier: 'alice@example.com', returnIfExist: true })).body.data.id).toBe(p.id);
    expect((await get(`/v1/profile/${p.id}`)).body.data.id).toBe(p.id);
    expect((await get(`/v1/profile/alice@example.com?appId=profiles`)).body.data.id).toBe(p.id);
    // Without appId the path is a display id only.
    expect((await get(`/v1/profile/alice@example.com`)).status).toBe(404);
    expect((await patch(`/v1/profile/${p.id}`, { metadata: { plan: 'pro', n: 1 } })).body.data.metadata).toEqual({ plan: 'pro', n: 1 });
    expect((await patch(`/v1/profile/${p.id}`, {})).body.data.metadata).toEqual({ plan: 'pro', n: 1 });
    expect((await patch(`/v1/profile/${p.id}`, { metadata: null })).body.data.metadata).toBeNull();
    expect((await patch(`/v1/profile/${p.id}`, { identifier: 'alice2' })).body.data.identifier).toBe('alice2');
    // Metadata keys come back exactly as sent (no case conversion inside the JSON).
    const keys = { plan_tier: 'gold', 'Some-Key': { inner_key: 1 } };
    expect((await patch(`/v1/profile/${p.id}`, { metadata: keys })).body.data.metadata).toEqual(keys);
    expect((await get(`/v1/profile/${p.id}`)).body.data.metadata).toEqual(keys);
    expect((await patch(`/v1/profile/${p.id}`, { accessGroupId: 'ag-nope' })).status).toBe(404);
    expect((await patch(`/v1/profile/${p.id}`, { metadata: [1] })).status).toBe(400);
    // Create takes null as PATCH does: no metadata.
    const bare = await post('/v1/profile/create', { appId: 'profiles', identifier: 'no-metadata', metadata: null });
    expect(bare.body.data).toMatchObject({ identifier: 'no-metadata', metadata: null });
    expect((await post('/v1/profile/create', { appId: 'profiles', identifier: 'list-metadata', metadata: [1] })).status).toBe(400);
    expect((await del(`/v1/profile/${bare.body.data.id}`)).status).toBe(200);
    const list = await get(`/v1/profile/list?appId=${app.id}`);
    expect(list.body.data.items.map((x: any) => x.id)).toEqual([p.id]);

    const gone = await del(`/v1/profile/${p.id}`);
    expect(gone.body.data).toEqual({ id: p.id, status: 'deleting' });
    expect((await get(`/v1/profile/list?appId=${app.id}`)).body.data.total).toBe(0);
    await eventually(async () => (await get(`/v1/profile/${p.id}`)).status === 404, 'profile deletion job');
    // The identifier is free again.
    expect((await post('/v1/profile/create', { appId: app.id, identifier: 'alice2' })).status).toBe(200);
  });

  it('rejects identifiers out of range and groups of another app', async () => {
    const a = (await post('/v1/app/create', { slug: 'pa', type: 'claude' })).body.data;
    const b = (await post('/v1/app/create', { slug: 'pb', type: 'claude' })).body.data;
    expect((await post('/v1/profile/create', { appId: a.id, identifier: '' })).status).toBe(400);
    expect((await post('/v1/profile/create', { appId: a.id, identifier: 'x'.repeat(257) })).status).toBe(400);
    expect((await post('/v1/profile/create', { appId: a.id, identifier: 'u', accessGroupId: b.defaultAccessGroupId })).status).toBe(404);
    expect((await post('/v1/profile/create', { appId: 'no-such-app', identifier: 'u' })).status).toBe(404);
  });
});

describe('JSON bodies', () => {
  it('refuse prototype keys, and an empty body under a JSON Content-Type counts as no body', async () => {
    for (const text of ['{"__proto__": {"admin": true}, "slug": "proto", "type": "claude"}', '{"constructor": {"prototype": {"x": 1}}, "slug": "proto", "type": "claude"}']) {
      const res = await t.call('POST', '/v1/app/create', { key, body: text });
      expect(res.status).toBe(400);
      expect(res.body.success).toBe(false);
    }
    const noBody = await t.call('POST', '/v1/app/create', { key, headers: { 'content-type': 'application/json' } });
    expect(noBody.status).toBe(400);
    expect(noBody.body.code).toBe('validation_failed');
  });
});

describe('Idempotency-Key', () => {
  it('answers 409 idempotency_in_progress to a repeat while the first request has not answered', async () => {
    // The first request's claim, as its preHandler leaves it until the reply is sent.
    const body = { slug: 'in-flight', type: 'claude' };
    await t.ctx.db
      .insertInto('idempotencyKeys')
      .values({ keyHash: hashKey(key), method: 'POST', path: '/v1/app/create', idempotencyKey: 'in-flight-1', bodyHash: sha256Hex(canonicalJson(body)) })
      .execute();
    const repeat = await t.call('POST', '/v1/app/create', { key, body, headers: { 'idempotency-key': 'in-flight-1' } });
    expect(repeat.status).toBe(409);
    expect(repeat.body.code).toBe('idempotency_in_progress');
    expect(await t.ctx.db.selectFrom('apps').select('id').where('slug', '=', 'in-flight').execute()).toEqual([]);
  });

  it('takes over a claim that no request has answered for 15 minutes (its process died)', async () => {
    const body = { slug: 'orphaned-claim', type: 'claude' };
    const claim = { keyHash: hashKey(key), method: 'POST', path: '/v1/app/create', bodyHash: sha256Hex(canonicalJson(body)) };
    const ago = (minutes: number) => new Date(Date.now() - minutes * 60_000);
    await t.ctx.db.insertInto('idempotencyKeys').values({ ...claim, idempotencyKey: 'died-1', createdAt: ago(16) }).execute();
    await t.ctx.db.insertInto('idempotencyKeys').values({ ...claim, idempotencyKey: 'slow-1', createdAt: ago(14) }).execute();
    const slow = await t.call('POST', '/v1/app/create', { key, body, headers: { 'idempotency-key': 'slow-1' } });
    expect(slow.status).toBe(409);
    expect(slow.body.code).toBe('idempotency_in_progress');
    const retried = await t.call('POST', '/v1/app/create', { key, body, headers: { 'idempotency-key': 'died-1' } });
    expect(retried.status).toBe(200);
    const again = await t.call('POST', '/v1/app/create', { key, body, headers: { 'idempotency-key': 'died-1' } });
    expect(again).toMatchObject({ status: 200, body: retried.body, headers: { 'idempotent-replayed': 'true' } });
  });

  it('keeps a first reply that refused the body: the same key with another body is 409, not a new try', async () => {
    const headers = { 'idempotency-key': 'refused-body-1' };
    for (const [i, bad] of [{ slug: 'BAD SLUG', type: 'claude' }, [], { slug: 'fine', type: 'claude', colour: 'red' }].entries()) {
      const key2 = { 'idempotency-key': `refused-body-${i}` };
      const first = await t.call('POST', '/v1/app/create', { key, body: bad, headers: key2 });
      expect(first.status).toBe(400);
      const replay = await t.call('POST', '/v1/app/create', { key, body: bad, headers: key2 });
      expect(replay).toMatchObject({ status: 400, body: first.body, headers: { 'idempotent-replayed': 'true' } });
      const other = await t.call('POST', '/v1/app/create', { key, body: { slug: `refused-then-${i}`, type: 'claude' }, headers: key2 });
      expect(other.status).toBe(409);
      expect(other.body.code).toBe('idempotency_key_reused');
    }
    // A body nested too deep to serialize is the schema's 400, key or no key.
    const deep = `{"slug":"deep","type":"claude","x":${'['.repeat(200_000)}${']'.repeat(200_000)}}`;
    const nested = await t.call('POST', '/v1/app/create', { key, body: deep, headers: { 'idempotency-key': 'deep-1' } });
    expect(nested.status, JSON.stringify(nested.body)).toBe(400);
    // A route that takes no body fields refuses one before its schema does: kept too.
    const refused = await t.call('POST', '/v1/state/download/state-none', { key, body: { format: 'zip' }, headers });
    expect(refused.status).toBe(400);
    expect((await t.call('POST', '/v1/state/download/state-none', { key, body: {}, headers })).body.code).toBe('idempotency_key_reused');
    expect(await t.ctx.db.selectFrom('apps').select('id').where('slug', 'like', 'refused-then-%').execute()).toEqual([]);
  });

  it('takes a key with spaces in it: printable ASCII is 0x20-0x7e', async () => {
    const headers = { 'idempotency-key': 'create app 42' };
    const body = { slug: 'spaced-key', type: 'claude' };
    const first = await t.call('POST', '/v1/app/create', { key, body, headers });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const again = await t.call('POST', '/v1/app/create', { key, body, headers });
    expect(again).toMatchObject({ status: 200, body: first.body, headers: { 'idempotent-replayed': 'true' } });
    const tab = await t.call('POST', '/v1/app/create', { key, body, headers: { 'idempotency-key': 'create\tapp' } });
    expect(tab.status).toBe(400);
  });

  it('replays the first reply, refuses another body, and scopes keys per path', async () => {
    const headers = { 'idempotency-key': 'create-app-1' };
    const first = await t.call('POST', '/v1/app/create', { key, body: { slug: 'idem', type: 'claude' }, headers });
    const again = await t.call('POST', '/v1/app/create', { key, body: { slug: 'idem', type: 'claude' }, headers });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect(again.headers['idempotent-replayed']).toBe('true');
    // The same JSON value is the same body, whatever order its keys are written in.
    const reordered = await t.call('POST', '/v1/app/create', { key, body: '{"type": "claude", "slug": "idem"}', headers });
    expect(reordered.status).toBe(200);
    expect(reordered.body).toEqual(first.body);
    const other = await t.call('POST', '/v1/app/create', { key, body: { slug: 'idem-2', type: 'claude' }, headers });
    expect(other.status).toBe(409);
    expect(other.body.code).toBe('idempotency_key_reused');
    // The kept reply is encrypted at rest: one-time secrets in it never sit in the clear.
    const kept = await t.ctx.db.selectFrom('idempotencyKeys').select('response').where('idempotencyKey', '=', 'create-app-1').executeTakeFirstOrThrow();
    expect(JSON.stringify(kept.response)).not.toContain(first.body.data.id);
    const apps = await t.ctx.db.selectFrom('apps').select('id').where('slug', 'in', ['idem', 'idem-2']).execute();
    expect(apps).toHaveLength(1);
    expect((await t.call('POST', '/v1/app/create', { key, body: { slug: 'idem', type: 'claude' }, headers: { 'idempotency-key': 'x'.repeat(256) } })).status).toBe(400);
  });

  it('takes no body and {} as the same body where an endpoint documents no body fields', async () => {
    const appId = (await t.call('POST', '/v1/app/create', { key, body: { slug: 'idem-nobody', type: 'claude' } })).body.data.id;
    await deploy(t, key, appId, { 'CLAUDE.md': '# hi\n' });
    const profile = (await t.call('POST', '/v1/profile/create', { key, body: { appId, identifier: 'nobody' } })).body.data;
    const headers = { 'idempotency-key': 'download-1' };
    const first = await t.call('POST', `/v1/state/download/${profile.headStateId}`, { key, headers });
    expect(first.status).toBe(200);
    const again = await t.call('POST', `/v1/state/download/${profile.headStateId}`, { key, body: {}, headers });
    expect(again).toMatchObject({ status: 200, body: first.body, headers: { 'idempotent-replayed': 'true' } });
  });
});
