/**
 * iMessage over Sendblue end to end: Sendblue's receive webhook at the channel's inboundUrl →
 * the durable inbound job → typing indicator → the real Claude runtime against the fake
 * Messages API → the reply through the fake Sendblue API; limits, duplicates, retries,
 * groups, and a restart between the inbound message and its reply.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SENDBLUE_MAX_CONTENT, splitContent } from '../../src/channels/sendblue-api.js';
import { loadConfig } from '../../src/config.js';
import { start, type Role, type Running } from '../../src/start.js';
import { allText, startFakeAnthropic, type FakeAnthropic } from '../fakes/anthropic.js';
import { startFakeSendblue, type FakeSendblue } from '../fakes/sendblue.js';
import { deploy } from '../files/bundle.js';
import { cloneTemplate } from '../helpers/databases.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { client, onTurn, PNG_1PX } from '../responses/helpers.js';

const FROM = '+15125550100';
let t: TestServer;
let fake: FakeAnthropic;
let sb: FakeSendblue;
let api: ReturnType<typeof client>;
let key: string;
let apps = 0;
let handles = 0;

beforeAll(async () => {
  fake = await startFakeAnthropic();
  sb = await startFakeSendblue();
  t = await startTestServer({
    listen: true,
    config: { webhookRetryBaseMs: 50, anthropicBaseUrl: fake.url, anthropicApiKey: fake.apiKey, sendblueApiBaseUrl: sb.url },
  });
  key = (await t.org()).key;
  api = client(t, key);
});

afterAll(async () => {
  await t?.close();
  await fake?.close();
  await sb?.close();
});

interface Imessage {
  appId: string;
  channelId: string;
  /** The path of its inboundUrl. */
  inbound: string;
}

/** A deployed app with an imessage channel pointed at the fake Sendblue. */
async function imessageApp(opts: { type?: 'claude' | 'openclaw'; limit?: object; signingSecret?: string } = {}, server: Pick<TestServer, 'call'> = t, k = key): Promise<Imessage> {
  const call = server.call;
  const app = await call('POST', '/v1/app/create', { key: k, body: { slug: `imsg-${++apps}`, type: opts.type ?? 'claude', ...(opts.limit ? { limit: opts.limit } : {}) } });
  await deploy(server as TestServer, k, app.body.data.id, { 'CLAUDE.md': '# texting agent\n' });
  const data = { sendBlueAPIKey: sb.apiKeyId, sendBlueSecretKey: sb.apiSecretKey, fromNumber: FROM, ...(opts.signingSecret ? { sendBlueSigningSecret: opts.signingSecret } : {}) };
  const channel = await call('POST', '/v1/channel/create', { key: k, body: { appId: app.body.data.id, slug: 'imessage', type: 'imessage', data } });
  expect(channel.status, JSON.stringify(channel.body)).toBe(200);
  return { appId: app.body.data.id, channelId: channel.body.data.id, inbound: new URL(channel.body.data.inboundUrl).pathname };
}

/** A payload as Sendblue's receive webhook sends it. */
function message(from: string, fields: { content?: string; handle?: string; media_url?: string; group_id?: string; is_outbound?: boolean } = {}) {
  const now = new Date().toISOString();
  return {
    accountEmail: 'ops@example.com',
    content: fields.content ?? '',
    is_outbound: fields.is_outbound ?? false,
    status: 'RECEIVED',
    error_code: null,
    error_message: null,
    message_handle: fields.handle ?? `handle-${++handles}-${Date.now()}`,
    date_sent: now,
    date_updated: now,
    from_number: from,
    number: from,
    to_number: FROM,
    was_downgraded: null,
    plan: 'dedicated',
    media_url: fields.media_url ?? '',
    message_type: fields.group_id ? 'group' : 'message',
    group_id: fields.group_id ?? '',
    participants: [from, FROM],
    send_style: '',
    opted_out: false,
    sendblue_number: FROM,
    service: 'iMessage',
  };
}

const post = (path: string, body: unknown, headers?: Record<string, string>, call = t.call) => call('POST', path, { key: '', body, headers });
const rowsOf = (channelId: string, db = t.ctx.db) => db.selectFrom('sendblueMessages').selectAll().where('channelId', '=', channelId).execute();
const repliesTo = (number: string) => sb.sent('/api/send-message', number);

describe('the inbound URL', () => {
  it('a wrong token is a 404 and a wrong or missing signing secret a 401: nothing stored, nothing run', async () => {
    const im = await imessageApp({ signingSecret: 'sb-signing-secret-0123456789' });
    const before = fake.requests.length;
    const wrongToken = await post(im.inbound.replace(/[^/]+$/, 'A'.repeat(32)), message('+15550000001', { content: 'hi' }), { 'sb-signing-secret': 'sb-signing-secret-0123456789' });
    expect(wrongToken.status).toBe(404);
    expect(wrongToken.body).toMatchObject({ success: false, code: 'not_found' });
    expect((await post('/v1/inbound/sendblue/', message('+15550000001', { content: 'hi' }))).status).toBe(404);
    for (const headers of [undefined, { 'sb-signing-secret': 'sb-signing-secret-0123456788' }]) {
      const res = await post(im.inbound, message('+15550000001', { content: 'hi' }), headers);
      expect(res.status).toBe(401);
      expect(res.body).toMatchObject({ success: false, code: 'unauthorized' });
    }
    expect(await rowsOf(im.channelId)).toEqual([]);
    const ok = await post(im.inbound, message('+15550000001', { content: 'hi' }), { 'sb-signing-secret': 'sb-signing-secret-0123456789' });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ success: true, data: { status: 'queued' } });
    await eventually(async () => repliesTo('+15550000001').length === 1, 'the reply');
    expect(fake.requests.length).toBe(before + 1);
  });

  it('ignores outbound echoes and payloads with nothing to run, still answering 200', async () => {
    const im = await imessageApp();
    const echoes = [message('+15550000002', { content: 'sent by us', is_outbound: true }), { ...message('+15550000002', { content: 'sent by us' }), is_outbound: 'true' }];
    const longHandle = message('+15550000002', { content: 'hi', handle: 'h'.repeat(3000) });
    const controlHandle = message('+15550000002', { content: 'hi', handle: 'h\u00002' });
    for (const payload of [...echoes, message('+15550000002'), { hello: 'world' }, longHandle, controlHandle, 'null', '', '{not json', '[1]']) {
      const res = await post(im.inbound, payload);
      expect(res.status, JSON.stringify(payload).slice(0, 40)).toBe(200);
      expect(res.body.data).toEqual({ status: 'ignored' });
    }
    for (const [body, headers] of [
      [undefined, undefined],
      ['content=hi&from_number=%2B15550000002&message_handle=form-1', { 'content-type': 'application/x-www-form-urlencoded' }],
    ] as const) {
      const res = await post(im.inbound, body, headers);
      expect(res.status, String(body)).toBe(200);
      expect(res.body.data).toEqual({ status: 'ignored' });
    }
    expect(await rowsOf(im.channelId)).toEqual([]);
    expect(sb.requests.filter((r) => r.body?.number === '+15550000002')).toEqual([]);
  });

  it('a NUL in a message is stored as U+FFFD, and the message runs', async () => {
    const im = await imessageApp();
    const res = await post(im.inbound, message('+15550000031', { content: 'a\u0000b' }));
    expect(res.status).toBe(200);
    expect(res.body.data).toEqual({ status: 'queued' });
    await eventually(async () => repliesTo('+15550000031').length === 1, 'the reply');
    expect(await t.ctx.db.selectFrom('instances').select('input').where('channelId', '=', im.channelId).execute()).toEqual([{ input: 'a\uFFFDb' }]);
  });

  it('a duplicate message_handle runs once and gets one reply', async () => {
    const im = await imessageApp();
    fake.script(onTurn('SB-DUP', { blocks: [{ type: 'text', text: 'Only once.' }] }));
    const payload = message('+15550000003', { content: 'SB-DUP please', handle: 'dup-handle-1' });
    const answers = await Promise.all([post(im.inbound, payload), post(im.inbound, payload), post(im.inbound, payload)]);
    expect(answers.map((a) => a.body.data.status).sort()).toEqual(['duplicate', 'duplicate', 'queued']);
    await eventually(async () => (await rowsOf(im.channelId))[0]?.status === 'replied', 'replied');
    expect((await post(im.inbound, payload)).body.data).toEqual({ status: 'duplicate' });
    expect(repliesTo('+15550000003').map((r) => r.body.content)).toEqual(['Only once.']);
    expect(fake.requests.filter((r) => allText(r.body).includes('SB-DUP'))).toHaveLength(1);
    expect((await api.call('GET', `/v1/history/list?appId=${im.appId}`)).body.data.total).toBe(1);
  });
});

describe('the sender', () => {
  it('one number, however it is spelled, is one profile, one session and one usage counter; an Apple ID email is lowercased', async () => {
    const im = await imessageApp();
    const number = '+15125550177';
    for (const spelling of [`${number}\n`, '+1 (512) 555-0177', '15125550177', '512.555.0177']) {
      expect((await post(im.inbound, message(spelling, { content: 'SB-SPELLING hi' }))).body.data).toEqual({ status: 'queued' });
    }
    for (const spelling of ['Grace@Example.COM', ' grace@example.com ']) await post(im.inbound, message(spelling, { content: 'SB-SPELLING hi' }));
    await eventually(async () => {
      const rows = await rowsOf(im.channelId);
      return rows.length === 6 && rows.every((r) => r.status === 'replied');
    }, 'six replies');
    const profiles = (await api.call('GET', `/v1/profile/list?appId=${im.appId}`)).body.data.items;
    expect(profiles.map((p: { identifier: string }) => p.identifier).sort()).toEqual([number, 'grace@example.com']);
    expect(profiles.find((p: { identifier: string }) => p.identifier === number)).toMatchObject({ usage: { used: 4 } });
    // The existing session id of an E.164 number, so conversations from before carry on.
    expect((await api.call('GET', `/v1/session/${encodeURIComponent(`imsg-${im.channelId}-${number}`)}`)).body.data).toMatchObject({ turns: 4 });
    // Replies (and typing indicators) go to the number as Sendblue spells it.
    expect(repliesTo(number)).toHaveLength(4);
    expect(sb.sent('/api/send-typing-indicator', number)).toHaveLength(4);
    expect(repliesTo('grace@example.com')).toHaveLength(2);
  });

  it('an over-long, garbled or non-phone, non-email from_number (or group_id) is ignored with a 200 and stores nothing', async () => {
    const im = await imessageApp();
    const bad = ['+1' + '5'.repeat(298), `${'a'.repeat(300)}@example.com`, '+1512555\u00000100', 'group-abc', 'alice', '+12', '12345', 'a@b@example.com', 'x\u202e@example.com'];
    for (const from of bad) {
      const res = await post(im.inbound, message(from, { content: 'SB-GARBAGE hi' }));
      expect(res.status, from).toBe(200);
      expect(res.body.data, from).toEqual({ status: 'ignored' });
    }
    for (const groupId of ['g'.repeat(257), 'group\u0000one']) {
      expect((await post(im.inbound, message('+15125550178', { content: 'SB-GARBAGE hi', group_id: groupId }))).body.data).toEqual({ status: 'ignored' });
    }
    expect(await rowsOf(im.channelId)).toEqual([]);
    expect((await api.call('GET', `/v1/profile/list?appId=${im.appId}`)).body.data.total).toBe(0);
  });

  it("a sender never lands in a group's session, and long identifiers get a session id within 128 characters", async () => {
    const im = await imessageApp({ type: 'openclaw' });
    await post(im.inbound, message('+15125550179', { content: 'hello group', group_id: 'abc' }));
    const groupSession = `imsg-${im.channelId}-group-abc`;
    await eventually(async () => (await rowsOf(im.channelId))[0]?.instanceId, 'the group run');
    // The group-looking sender is refused; an email that reads like the group's id gets its own session.
    expect((await post(im.inbound, message('group-abc', { content: 'let me in' }))).body.data).toEqual({ status: 'ignored' });
    const long = `${'l'.repeat(200)}@example.com`;
    for (const from of ['group-abc@x.com', long]) await post(im.inbound, message(from, { content: 'let me in' }));
    await post(im.inbound, message('+15125550179', { content: 'a long group', group_id: `${'G'.repeat(120)}-1` }));
    const rows = await eventually(async () => {
      const r = await rowsOf(im.channelId);
      return r.length === 4 && r.every((m) => m.instanceId) && r;
    }, 'four runs');
    const sessions = await Promise.all(rows.map(async (r) => (await api.instance(r.instanceId!)).sessionId as string));
    expect(sessions.filter((s) => s === groupSession)).toHaveLength(1);
    expect(new Set(sessions).size).toBe(4);
    expect(sessions.every((s) => s.length <= 128)).toBe(true);
    const byFrom = Object.fromEntries(rows.map((r, i) => [r.groupId ?? r.fromNumber, sessions[i]]));
    expect(byFrom['group-abc@x.com']).toBe(`imsg-${im.channelId}-group-abc@x.com`);
    expect(byFrom[long]).toMatch(new RegExp(`^imsg-${im.channelId}-~sender-[0-9a-f]{64}$`));
    expect(byFrom[`${'G'.repeat(120)}-1`]).toMatch(new RegExp(`^imsg-${im.channelId}-~group-[0-9a-f]{64}$`));
    expect((await api.call('GET', `/v1/profile/${encodeURIComponent(long)}?appId=${im.appId}`)).body.data).toMatchObject({ identifier: long });
  });
});

describe('a conversation', () => {
  it('answers at once, shows a typing indicator, runs the app for the sender, and replies from the channel number; one session per number; media become images', async () => {
    const im = await imessageApp();
    const alice = '+15550001111';
    const slow = fake.script(onTurn('SB-HELLO', { blocks: [{ type: 'text', text: ['Hi ', 'from the agent.'] }], pauseAfter: 1 }));
    const res = await post(im.inbound, message(alice, { content: 'SB-HELLO there' }));
    expect(res.body).toEqual({ success: true, data: { status: 'queued' } });
    await slow.paused;
    // The run is mid-turn: the inbound request did not wait for it, and the typing indicator came first.
    expect(repliesTo(alice)).toEqual([]);
    const typing = sb.sent('/api/send-typing-indicator', alice);
    expect(typing.map((r) => r.body)).toEqual([{ number: alice, from_number: FROM }]);
    expect(typing[0].headers).toMatchObject({ 'sb-api-key-id': sb.apiKeyId, 'sb-api-secret-key': sb.apiSecretKey });
    slow.resume();
    const [reply] = await eventually(async () => (repliesTo(alice).length > 0 ? repliesTo(alice) : null), 'the reply');
    expect(reply.body).toEqual({ number: alice, from_number: FROM, content: 'Hi from the agent.' });
    expect(reply.headers).toMatchObject({ 'sb-api-key-id': sb.apiKeyId, 'sb-api-secret-key': sb.apiSecretKey, 'content-type': 'application/json' });
    expect(reply.at).toBeGreaterThan(typing[0].at);

    const profile = (await api.call('GET', `/v1/profile/${encodeURIComponent(alice)}?appId=${im.appId}`)).body.data;
    expect(profile).toMatchObject({ identifier: alice, usage: { used: 1 } });
    const sessionId = `imsg-${im.channelId}-${alice}`;
    const [row] = await rowsOf(im.channelId);
    expect(await api.instance(row.instanceId!)).toMatchObject({ channelId: im.channelId, sessionId, profileId: profile.id, userId: alice, input: 'SB-HELLO there', output: 'Hi from the agent.' });

    // A picture in the same conversation: same session, the image reaches the model.
    const images = http.createServer((_req, r) => r.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.from(PNG_1PX, 'base64')));
    await new Promise<void>((r) => images.listen(0, '127.0.0.1', r));
    try {
      const second = fake.script(onTurn('SB-PICTURE', { blocks: [{ type: 'text', text: 'Nice pixel.' }] }));
      const url = `http://127.0.0.1:${(images.address() as AddressInfo).port}/cat.png`;
      await post(im.inbound, message(alice, { content: 'SB-PICTURE look', media_url: url }));
      await eventually(async () => repliesTo(alice).length === 2, 'the second reply');
      expect(repliesTo(alice)[1].body.content).toBe('Nice pixel.');
      const request = (await second.request).body;
      expect(JSON.stringify(request.messages)).toContain(`"type":"image","source":{"type":"base64","media_type":"image/png","data":"${PNG_1PX}"}`);
      expect(allText(request)).toContain('SB-HELLO there'); // the conversation carried over
    } finally {
      images.close();
    }
    expect((await api.call('GET', `/v1/session/${encodeURIComponent(sessionId)}`)).body.data).toMatchObject({ type: 'single', profileId: profile.id, turns: 2 });
  });

  it('an over-limit sender gets the limit message instead, and the model is not called', async () => {
    const im = await imessageApp({ limit: { amount: 1, interval: 'daily', message: 'You are out of texts for today.' } });
    const bob = '+15550002222';
    fake.script(onTurn('SB-FIRST', { blocks: [{ type: 'text', text: 'First and last.' }] }));
    await post(im.inbound, message(bob, { content: 'SB-FIRST' }));
    await eventually(async () => repliesTo(bob).length === 1, 'the first reply');
    const modelCalls = fake.requests.length;
    await post(im.inbound, message(bob, { content: 'SB-SECOND' }));
    await eventually(async () => repliesTo(bob).length === 2, 'the limit message');
    expect(repliesTo(bob).map((r) => r.body)).toEqual([
      { number: bob, from_number: FROM, content: 'First and last.' },
      { number: bob, from_number: FROM, content: 'You are out of texts for today.' },
    ]);
    expect(fake.requests.length).toBe(modelCalls);
    expect((await api.call('GET', `/v1/history/list?appId=${im.appId}`)).body.data.total).toBe(1);
  });

  it('splits a long reply under the content limit; Sendblue errors are retried and never resend a part', async () => {
    const im = await imessageApp();
    const carol = '+15550003333';
    const long = [`${'a'.repeat(15_000)}\n\n`, `${'b'.repeat(10_000)}`];
    fake.script(onTurn('SB-LONG', { blocks: [{ type: 'text', text: long }] }));
    sb.fail('/api/send-message', 2, 503, carol);
    await post(im.inbound, message(carol, { content: 'SB-LONG' }));
    await eventually(async () => (await rowsOf(im.channelId))[0]?.status === 'replied', 'replied', 40_000);
    expect(repliesTo(carol).map((r) => r.body.content)).toEqual(['a'.repeat(15_000), 'b'.repeat(10_000)]);
    expect(sb.requests.filter((r) => r.path === '/api/send-message' && r.body.number === carol).map((r) => r.status)).toEqual([503, 503, 200, 200]);
  });

  it('Sendblue errors past the retry window are recorded on the instance', async () => {
    const im = await imessageApp();
    const dave = '+15550004444';
    fake.script(onTurn('SB-LOST', { blocks: [{ type: 'text', text: 'You will never see this.' }] }));
    const window = t.config.webhookRetryWindowMs;
    t.config.webhookRetryWindowMs = 300;
    sb.fail('/api/send-message', 1000, 500, dave);
    try {
      await post(im.inbound, message(dave, { content: 'SB-LOST' }));
      const [row] = await eventually(async () => {
        const rows = await rowsOf(im.channelId);
        return rows[0]?.status === 'failed' && rows;
      }, 'given up', 40_000);
      expect(row.replyAttempts).toBeGreaterThanOrEqual(2);
      const instance = await api.instance(row.instanceId!);
      expect(instance).toMatchObject({ status: 'completed', output: 'You will never see this.' });
      expect(instance.error).toMatch(/^The reply could not be sent through Sendblue: .*HTTP 500/);
    } finally {
      t.config.webhookRetryWindowMs = window;
      sb.fail('/api/send-message', 0);
    }
  });

  it('a 2xx answer reporting status ERROR is no delivery: a permanent code fails the reply at once, with its message', async () => {
    const im = await imessageApp();
    const gus = '+15550006666';
    fake.script(onTurn('SB-REFUSED', { blocks: [{ type: 'text', text: 'To a number Sendblue refuses.' }] }));
    sb.fail('/api/send-message', 1, 200, gus, 4000);
    await post(im.inbound, message(gus, { content: 'SB-REFUSED' }));
    const [row] = await eventually(async () => {
      const rows = await rowsOf(im.channelId);
      return rows[0]?.status === 'failed' && rows;
    }, 'the reply to fail', 40_000);
    expect(row.replyAttempts).toBe(1); // permanent: not retried
    expect((await api.instance(row.instanceId!)).error).toMatch(/^The reply could not be sent through Sendblue: .*reported an error \(4000\): Error 4000/);
  });

  it('group chats: an openclaw app shares one group session per group_id; a claude app answers the group from the sender session', async () => {
    const claude = await imessageApp();
    const erin = '+15550005555';
    fake.script(onTurn('SB-GROUP', { blocks: [{ type: 'text', text: 'Hello, group.' }] }));
    await post(claude.inbound, message(erin, { content: 'SB-GROUP hi all', group_id: 'group-uuid-1' }));
    // Other tests' group replies may still arrive: only this group's count.
    const toGroup = () => sb.sent('/api/send-group-message').filter((r) => r.body?.group_id === 'group-uuid-1');
    const [sent] = await eventually(async () => (toGroup().length > 0 ? toGroup() : null), 'the group reply');
    expect(sent.body).toEqual({ group_id: 'group-uuid-1', from_number: FROM, content: 'Hello, group.' });
    expect(sb.sent('/api/send-typing-indicator', erin)).toEqual([]); // Sendblue has none for groups
    expect((await api.instance((await rowsOf(claude.channelId))[0].instanceId!)).sessionId).toBe(`imsg-${claude.channelId}-${erin}`);

    const openclaw = await imessageApp({ type: 'openclaw' });
    for (const from of ['+15550006666', '+15550007777']) await post(openclaw.inbound, message(from, { content: 'hello group', group_id: 'group-uuid-2' }));
    const rows = await eventually(async () => {
      const r = await rowsOf(openclaw.channelId);
      return r.length === 2 && r.every((m) => m.instanceId) && r;
    }, 'two runs');
    const sessionId = `imsg-${openclaw.channelId}-group-group-uuid-2`;
    for (const r of rows) expect((await api.instance(r.instanceId!)).sessionId).toBe(sessionId);
    expect((await api.call('GET', `/v1/session/${sessionId}`)).body.data).toMatchObject({ type: 'group', profileId: null });
  });

  it('splitContent keeps every part under the limit, breaking at paragraphs, lines or words, never inside a character', () => {
    expect(SENDBLUE_MAX_CONTENT).toBe(18_995);
    expect(splitContent('short')).toEqual(['short']);
    expect(splitContent('one two three four', 9)).toEqual(['one two', 'three', 'four']);
    expect(splitContent('para one.\n\npara two is here', 16)).toEqual(['para one.', 'para two is here']);
    const emoji = '😀'.repeat(30_000);
    const parts = splitContent(emoji);
    expect(parts.every((p) => p.length <= SENDBLUE_MAX_CONTENT && !/^[\uDC00-\uDFFF]|[\uD800-\uDBFF]$/.test(p))).toBe(true);
    expect(parts.join('')).toBe(emoji);
  });
});

describe('a restart between the inbound message and its reply', () => {
  it('still replies exactly once', async () => {
    const database = await cloneTemplate();
    const config = loadConfig(
      { HARNESSLAYER_ALLOW_PRIVATE_URLS: '1' },
      {
        port: 0,
        dataDir: database.dataDir,
        databaseUrl: database.databaseUrl,
        userKey: t.userKey,
        secret: 'test-secret-restart',
        anthropicBaseUrl: fake.url,
        anthropicApiKey: fake.apiKey,
        sendblueApiBaseUrl: sb.url,
        // Long enough that the process stops while the retry waits.
        webhookRetryBaseMs: 2_000,
      },
    );
    let running: Running | undefined;
    const boot = async (role: Role) => {
      running = await start(config, role, { listen: true });
      config.publicUrl = `http://127.0.0.1:${(running.server!.server.address() as AddressInfo).port}`;
    };
    const call: TestServer['call'] = async (method, path, o = {}) => {
      const res = await running!.server!.inject({
        method: method as 'POST',
        url: path,
        headers: { ...(o.key ? { authorization: `Bearer ${o.key}` } : {}), ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}), ...(o.headers ?? {}) },
        ...(o.body !== undefined ? { payload: JSON.stringify(o.body) } : {}),
      });
      return { status: res.statusCode, body: res.json(), headers: res.headers };
    };
    const frank = '+15550008888';
    try {
      // An API-only process takes the message: stored, its job queued, nothing run yet.
      await boot('api');
      const org = (await call('POST', '/v1/organization/create', { key: t.userKey, body: { name: 'Restart', slug: `restart-${Date.now()}` } })).body.data;
      const im = await imessageApp({}, { call }, org.apiKey);
      fake.script(onTurn('SB-RESTART', { blocks: [{ type: 'text', text: 'Back after the restart.' }] }));
      expect((await post(im.inbound, message(frank, { content: 'SB-RESTART' }), undefined, call)).body.data).toEqual({ status: 'queued' });
      expect((await rowsOf(im.channelId, running!.ctx.db)).map((r) => r.status)).toEqual(['received']);
      await running!.stop();

      // The next process runs it; its first reply attempt fails, and it stops mid-backoff.
      sb.fail('/api/send-message', 1, 502, frank);
      await boot('all');
      await eventually(async () => sb.requests.some((r) => r.body?.number === frank && r.status === 502), 'the failed attempt');
      await running!.stop();

      // A third process sends the reply: once.
      await boot('all');
      const [row] = await eventually(async () => {
        const rows = await rowsOf(im.channelId, running!.ctx.db);
        return rows[0]?.status === 'replied' && rows;
      }, 'replied after restarts');
      expect(row).toMatchObject({ replyAttempts: 2, replyPartsSent: 1, repliedAt: expect.any(Date) });
      expect(repliesTo(frank).map((r) => r.body.content)).toEqual(['Back after the restart.']);
      expect(sb.sent('/api/send-typing-indicator', frank)).toHaveLength(1);
      expect(fake.requests.filter((r) => allText(r.body).includes('SB-RESTART'))).toHaveLength(1);
    } finally {
      await running?.stop();
      await database.drop();
    }
  });
});
