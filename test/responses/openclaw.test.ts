/**
 * `openclaw` apps end to end: `response/run` → queue → worker → the real OpenClaw gateway (a
 * Node 24 child process) against the fake Messages API → events, states, records. One
 * gateway serves the whole file (it is heavy: ~1.2 GB, tens of seconds to start).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allText, startFakeAnthropic, type FakeAnthropic, type FakeModelRequest } from '../fakes/anthropic.js';
import { deploy } from '../files/bundle.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { openclawPool } from '../../src/runtime/openclaw-runtime.js';
import { client, onTurn, PNG_1PX, readSse, texts } from './helpers.js';

let t: TestServer;
let fake: FakeAnthropic;
let api: ReturnType<typeof client>;
let key: string;
let appId: string;
let channelId: string;
const WORKSPACE = { 'AGENTS.md': 'Operating marker: ZEBRA-42\n', 'SOUL.md': 'Be brief.\n', 'MEMORY.md': 'nothing yet\n' };
const sha = (s: string) => `sha256-${createHash('sha256').update(s).digest('hex')}`;
/** The model request that carries tool call `id`'s result. OpenClaw strips `_` from the ids it sends back, so the ids here have none. */
const afterToolCall = (id: string) => (r: FakeModelRequest) => JSON.stringify(r.body.messages ?? []).includes(`"tool_use_id":"${id}"`);

beforeAll(async () => {
  fake = await startFakeAnthropic();
  t = await startTestServer({ listen: true, config: { anthropicBaseUrl: fake.url, anthropicApiKey: fake.apiKey, runTimeoutSeconds: 240 } });
  key = (await t.org()).key;
  api = client(t, key);
  appId = (await api.call('POST', '/v1/app/create', { slug: 'claw', type: 'openclaw' })).body.data.id;
  await deploy(t, key, appId, WORKSPACE);
  channelId = (await api.call('POST', '/v1/channel/create', { appId, slug: 'api', type: 'api' })).body.data.id;
  // Start the gateway once, outside any test's time budget.
  const lease = await openclawPool(t.ctx).acquire(appId);
  lease.release();
}, 300_000);

afterAll(async () => {
  await t?.close();
  await fake?.close();
});

const files = async (stateId: string) => (await api.call('GET', `/v1/state/${stateId}`)).body.data.files;

// The gateway is slow on a loaded machine (a new session's agent alone takes seconds).
describe('openclaw apps', { timeout: 240_000 }, () => {
  it('runs a text turn: events through poll and SSE, the workspace in the prompt, records', async () => {
    fake.script(onTurn('SAY-HELLO', { blocks: [{ type: 'text', text: ['Hello ', 'there, ', 'friend.'] }] }));
    const res = await api.run({ appId, channelId, userId: 'alice', input: 'SAY-HELLO please', sessionId: 'alice-1' });
    expect(res.status).toBe(200);
    const { instanceId, profileId } = res.body.data;

    const events = await api.events(instanceId);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events.slice(0, 2).map((e) => e.data)).toEqual([{ status: 'queued' }, { status: 'running' }]);
    expect(texts(events)).toBe('Hello there, friend.');
    expect(events.filter((e) => e.type === 'message').map((e) => e.data)).toEqual([{ role: 'assistant', content: 'Hello there, friend.' }]);
    const usage = { inputTokens: 100, outputTokens: 10, costUsd: 0 };
    expect(events.at(-1)).toMatchObject({ type: 'result', done: true, data: { status: 'completed', output: 'Hello there, friend.', error: null, usage } });
    const system = JSON.stringify(fake.requests.at(-1)!.body.system);
    expect(system).toContain('ZEBRA-42');

    const sse = await readSse(`${t.url}/v1/response/stream/${instanceId}`, key);
    expect(sse.status).toBe(200);
    expect(sse.events.map((e) => e.data)).toEqual(events);

    // Nothing changed in the workspace: the instance keeps the profile's head state.
    const instance = await api.instance(instanceId);
    expect(instance).toMatchObject({ status: 'completed', profileId, usage, output: 'Hello there, friend.' });
    const profile = (await api.call('GET', `/v1/profile/${profileId}`)).body.data;
    expect(profile).toMatchObject({ headStateId: instance.stateId, usage: { used: 1 } });
    expect((await api.call('GET', `/v1/state/${instance.stateId}`)).body.data).toMatchObject({ number: 1, source: 'init' });
    const history = (await api.call('GET', '/v1/history/list?sessionId=alice-1')).body.data.items;
    expect(history).toEqual([expect.objectContaining({ instanceId, status: 'completed', output: 'Hello there, friend.', usage })]);
  });

  it('commits the MEMORY.md the model wrote as a new state, with tool events; the next turn on the session holds the first', async () => {
    const memory = 'The code word is PELICAN.\n';
    fake.script(
      onTurn('REMEMBER-PELICAN', {
        blocks: [
          { type: 'text', text: 'Noting it. ' },
          { type: 'tool_use', id: 'toolumem1', name: 'write', input: { path: 'MEMORY.md', content: memory } },
        ],
      }),
    );
    fake.script({ match: afterToolCall('toolumem1'), blocks: [{ type: 'text', text: 'Saved.' }] });
    const one = (await api.run({ appId, channelId, userId: 'bob', input: 'REMEMBER-PELICAN', sessionId: 'bob-1' })).body.data;
    const events = await api.events(one.instanceId);
    expect(events.filter((e) => e.type === 'tool.call').map((e) => e.data)).toEqual([{ id: 'toolumem1', name: 'write', input: { path: 'MEMORY.md', content: memory } }]);
    expect(events.filter((e) => e.type === 'tool.result').map((e) => e.data)).toEqual([{ toolCallId: 'toolumem1', output: expect.stringContaining('Successfully wrote'), isError: false }]);
    expect(events.at(-1)!.data).toMatchObject({ status: 'completed', output: 'Saved.' });

    const instance = await api.instance(one.instanceId);
    const state = (await api.call('GET', `/v1/state/${instance.stateId}`)).body.data;
    expect(state).toMatchObject({ profileId: one.profileId, number: 2, source: 'run', isHead: true });
    expect(state.files).toContainEqual({ name: 'MEMORY.md', hash: sha(memory), size: memory.length });
    expect(state.files).toContainEqual({ name: 'AGENTS.md', hash: sha(WORKSPACE['AGENTS.md']), size: WORKSPACE['AGENTS.md'].length });

    const next = fake.script(onTurn('WHAT-WORD', { blocks: [{ type: 'text', text: 'It was PELICAN.' }] }));
    const two = (await api.run({ appId, channelId, userId: 'bob', input: 'WHAT-WORD was it?', sessionId: 'bob-1' })).body.data;
    expect((await api.events(two.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'It was PELICAN.' });
    const request = (await next.request).body;
    expect(allText({ messages: request.messages })).toContain('REMEMBER-PELICAN');
    // The second turn's workspace was materialized from the new head: MEMORY.md is the new one.
    expect(JSON.stringify(request.system)).toContain('PELICAN');

    // A session deleted and started again under its id is a new conversation (the files stay).
    expect((await api.call('DELETE', '/v1/session/bob-1')).body.data).toEqual({ id: 'bob-1', deleted: true });
    const anew = fake.script(onTurn('START-AGAIN', { blocks: [{ type: 'text', text: 'Hello again.' }] }));
    const three = (await api.run({ appId, channelId, userId: 'bob', input: 'START-AGAIN', sessionId: 'bob-1' })).body.data;
    expect((await api.events(three.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed' });
    expect(allText({ messages: (await anew.request).body.messages })).not.toContain('REMEMBER-PELICAN');

    // Another profile of the app has its own files and its own conversation.
    const other = fake.script(onTurn('CAROL-HI', { blocks: [{ type: 'text', text: 'Hi Carol.' }] }));
    const carol = (await api.run({ appId, channelId, userId: 'carol', input: 'CAROL-HI', sessionId: 'carol-1' })).body.data;
    expect((await api.events(carol.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed' });
    const seen = (await other.request).body;
    expect(allText(seen)).not.toContain('PELICAN');
    expect(await files((await api.instance(carol.instanceId)).stateId)).toContainEqual({ name: 'MEMORY.md', hash: sha(WORKSPACE['MEMORY.md']), size: WORKSPACE['MEMORY.md'].length });
  });

  it('runs a group session for two profiles in arrival order; each turn works in its own profile files', async () => {
    const session = (await api.call('POST', '/v1/session/create', { appId, type: 'group' })).body.data;
    expect(session).toMatchObject({ type: 'group', profileId: null });
    fake.script(onTurn('DAN-SAYS', { blocks: [{ type: 'tool_use', id: 'tooludan1', name: 'write', input: { path: 'MEMORY.md', content: 'Dan was here.\n' } }] }));
    fake.script({ match: afterToolCall('tooludan1'), blocks: [{ type: 'text', text: 'Hi Dan.' }] });
    const erin = fake.script(onTurn('ERIN-SAYS', { blocks: [{ type: 'text', text: 'Hi Erin, Dan spoke first.' }] }));
    const dan = (await api.run({ appId, channelId, userId: 'dan', input: 'DAN-SAYS hello', sessionId: session.id })).body.data;
    const second = (await api.run({ appId, channelId, userId: 'erin', input: 'ERIN-SAYS hello', sessionId: session.id })).body.data;
    expect(second.profileId).not.toBe(dan.profileId);

    expect((await api.events(dan.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Hi Dan.' });
    expect((await api.events(second.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Hi Erin, Dan spoke first.' });
    // One conversation: Erin's turn carries Dan's.
    const text = allText((await erin.request).body);
    expect(text).toContain('DAN-SAYS hello');
    expect(text).toContain('ERIN-SAYS hello');
    // Files stay per profile: Dan's write is in Dan's state only.
    expect(await files((await api.instance(dan.instanceId)).stateId)).toContainEqual({ name: 'MEMORY.md', hash: sha('Dan was here.\n'), size: 14 });
    expect(await files((await api.instance(second.instanceId)).stateId)).toContainEqual({ name: 'MEMORY.md', hash: sha(WORKSPACE['MEMORY.md']), size: WORKSPACE['MEMORY.md'].length });
    expect((await api.call('GET', `/v1/session/${session.id}`)).body.data).toMatchObject({ type: 'group', profileId: null, turns: 2, lastInstanceId: second.instanceId });

    // Deleting Erin's profile takes her turn out of the group session's count; Dan's stays.
    expect((await api.call('DELETE', `/v1/profile/${second.profileId}`)).status).toBe(200);
    await eventually(async () => (await api.call('GET', `/v1/profile/${second.profileId}`)).status === 404, 'the profile to be deleted');
    expect((await api.call('GET', `/v1/session/${session.id}`)).body.data).toMatchObject({ turns: 1, lastInstanceId: dan.instanceId });
  });

  it('two new conversations started at once both complete', async () => {
    // Each new conversation creates an OpenClaw agent, which reloads the gateway's config.
    const first = fake.script(onTurn('TWIN-ONE', { blocks: [{ type: 'text', text: 'One here.' }] }));
    const second = fake.script(onTurn('TWIN-TWO', { blocks: [{ type: 'text', text: 'Two here.' }] }));
    const [one, two] = await Promise.all([
      api.run({ appId, channelId, userId: 'twin-a', input: 'TWIN-ONE', sessionId: 'twin-a-1' }),
      api.run({ appId, channelId, userId: 'twin-b', input: 'TWIN-TWO', sessionId: 'twin-b-1' }),
    ]);
    const ends = await Promise.all([one, two].map(async (r) => (await api.events(r.body.data.instanceId)).at(-1)!.data));
    expect(ends).toEqual([expect.objectContaining({ status: 'completed', output: 'One here.' }), expect.objectContaining({ status: 'completed', output: 'Two here.' })]);
    expect(allText((await first.request).body)).toContain('TWIN-ONE');
    expect(allText((await second.request).body)).toContain('TWIN-TWO');
  });

  it('stops a turn mid-stream; the next turn sees the stopped input and the partial text', async () => {
    const slow = fake.script(onTurn('TELL-ME-SLOWLY', { blocks: [{ type: 'text', text: ['Partial ', 'answer ', 'NEVER-STREAMED'] }], pauseAfter: 2 }));
    const run = (await api.run({ appId, channelId, userId: 'frank', input: 'TELL-ME-SLOWLY', sessionId: 'frank-1' })).body.data;
    await slow.paused;
    await api.streamed(run.instanceId, 'Partial answer');
    expect((await api.stop(run.instanceId)).body.data).toEqual({ instanceId: run.instanceId, status: 'stopped' });
    await slow.disconnected;
    const events = await api.events(run.instanceId);
    expect(events.at(-1)).toMatchObject({ type: 'result', done: true, data: { status: 'stopped', output: 'Partial answer', error: null } });
    expect(events.filter((e) => e.type === 'error')).toEqual([]);

    const next = fake.script(onTurn('GO-ON', { blocks: [{ type: 'text', text: 'Continuing.' }] }));
    const two = (await api.run({ appId, channelId, userId: 'frank', input: 'GO-ON', sessionId: 'frank-1' })).body.data;
    expect((await api.events(two.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Continuing.' });
    const seen = allText((await next.request).body);
    expect(seen).toContain('TELL-ME-SLOWLY');
    expect(seen).toContain('Partial answer');
    expect(seen).not.toContain('NEVER-STREAMED');
    const history = (await api.call('GET', '/v1/history/list?sessionId=frank-1')).body.data.items;
    expect(history.map((h: { status: string }) => h.status).sort()).toEqual(['completed', 'stopped']);
  });

  it('counts runs against the profile\'s access group as for claude apps', async () => {
    const group = (await api.call('POST', '/v1/access_group/create', { appId, name: 'One a day', limit: 1, limitReset: 'daily', limitMessage: 'One a day, come back tomorrow.' })).body.data;
    const profile = (await api.call('POST', '/v1/profile/create', { appId, identifier: 'ivy', accessGroupId: group.id })).body.data;
    fake.script(onTurn('LIMITED-RUN', { blocks: [{ type: 'text', text: 'Counted.' }] }));
    const replies = await Promise.all([1, 2, 3].map((i) => api.run({ appId, channelId, userId: 'ivy', input: `LIMITED-RUN ${i}` })));
    const accepted = replies.filter((r) => r.status === 200);
    expect(accepted).toHaveLength(1);
    for (const r of replies.filter((r) => r.status !== 200)) {
      expect(r).toMatchObject({ status: 429, body: { success: false, error: 'One a day, come back tomorrow.', code: 'limit_exceeded' } });
    }
    expect((await api.events(accepted[0].body.data.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Counted.' });
    expect((await api.call('GET', `/v1/profile/${profile.id}`)).body.data.usage).toMatchObject({ used: 1, limit: 1 });
  });

  it("an end user's `/...` message reaches the model as a message: no gateway command runs", async () => {
    const seen = fake.script(onTurn('/export-session', { blocks: [{ type: 'text', text: 'Nothing to export here.' }] }));
    const run = (await api.run({ appId, channelId, userId: 'ben', input: '/export-session', sessionId: 'ben-1' })).body.data;
    expect((await api.events(run.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Nothing to export here.' });
    expect(allText((await seen.request).body)).toContain('/export-session');
    const names = (await files((await api.instance(run.instanceId)).stateId)).map((f: { name: string }) => f.name).sort();
    expect(names).toEqual(Object.keys(WORKSPACE).sort());
    // Inside a message, a shortcut (`/whoami`) or directive (`/think`) is text too, not stripped.
    const inline = fake.script(onTurn('INLINE-CHECK', { blocks: [{ type: 'text', text: 'Just words.' }] }));
    const second = (await api.run({ appId, channelId, userId: 'ben', input: 'INLINE-CHECK what do /whoami and /think high do?', sessionId: 'ben-1' })).body.data;
    expect((await api.events(second.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Just words.' });
    expect(allText((await inline.request).body)).toContain('what do /whoami and /think high do?');
  });

  it("an image turn commits no copy of the image: OpenClaw's staged media is not the user's file", async () => {
    fake.script(onTurn('LOOK-AT-THIS', { blocks: [{ type: 'text', text: 'A single pixel.' }] }));
    const run = (await api.run({ appId, channelId, userId: 'ann', input: 'LOOK-AT-THIS', sessionId: 'ann-1', images: [{ mediaType: 'image/png', data: PNG_1PX }] })).body.data;
    expect((await api.events(run.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'A single pixel.' });
    const names = (await files((await api.instance(run.instanceId)).stateId)).map((f: { name: string }) => f.name).sort();
    expect(names).toEqual(Object.keys(WORKSPACE).sort());
  });

  it('ends a turn failed when its gateway is killed mid-run; the next run starts a new gateway', async () => {
    const [before] = openclawPool(t.ctx).running;
    const slow = fake.script(onTurn('START-SOMETHING', { blocks: [{ type: 'text', text: ['Half ', 'an ', 'answer'] }], pauseAfter: 1 }));
    const run = (await api.run({ appId, channelId, userId: 'gina', input: 'START-SOMETHING', sessionId: 'gina-1' })).body.data;
    await slow.paused;
    process.kill(-before.pid!, 'SIGKILL');
    const events = await api.events(run.instanceId);
    expect(events.at(-1)!.data).toMatchObject({ status: 'failed', error: expect.stringMatching(/gateway stopped during the turn/) });
    expect(events.filter((e) => e.type === 'error').map((e) => e.data.code)).toEqual(['gateway_error']);
    expect(await api.instance(run.instanceId)).toMatchObject({ status: 'failed', completedAt: expect.any(String) });
    // The turn fails when its connection drops, which can come before the process's exit is
    // seen; a turn in between would still be given the dying gateway and fail (a known gap).
    await new Promise<void>((resolve) => before.onExit(resolve));

    fake.script(onTurn('ARE-YOU-THERE', { blocks: [{ type: 'text', text: 'Back again.' }] }));
    const two = (await api.run({ appId, channelId, userId: 'gina', input: 'ARE-YOU-THERE', sessionId: 'gina-1' })).body.data;
    const twoEnd = (await api.events(two.instanceId, 240_000)).at(-1)!.data;
    expect(twoEnd, String(twoEnd.error)).toMatchObject({ status: 'completed', output: 'Back again.' });
    const [after] = openclawPool(t.ctx).running;
    expect(after.pid).not.toBe(before.pid);
  }, 300_000);

  it('deleting the app stops its gateway and deletes its transcripts and workspaces', async () => {
    const pool = openclawPool(t.ctx);
    const [gateway] = pool.running;
    expect(existsSync(path.join(gateway.dir, 'state'))).toBe(true);
    expect((await api.call('DELETE', `/v1/app/${appId}`)).body.data).toEqual({ id: appId, status: 'deleting' });
    await eventually(async () => (await api.call('GET', `/v1/app/${appId}`)).status === 404, 'the app deletion job');
    expect(gateway.alive).toBe(false);
    expect(pool.running).toEqual([]);
    expect(existsSync(gateway.dir)).toBe(false);
  });
});
