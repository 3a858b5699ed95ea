/**
 * The response pipeline end to end: `response/run` → queue → worker → the real Claude Agent
 * SDK and its bundled Claude Code against the fake Messages API → events, states, records.
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allText, startFakeAnthropic, turnText, type FakeAnthropic, type FakeScript } from '../fakes/anthropic.js';
import { startFakeMcp, type FakeMcp } from '../fakes/mcp.js';
import { instanceEndedHooks } from '../../src/core/runs.js';
import { deploy } from '../files/bundle.js';
import { eventually, startTestServer, type TestServer } from '../helpers/server.js';
import { afterTool, client, dynamic, onTurn, PNG_1PX, readSse, texts, workDirOf } from './helpers.js';

let t: TestServer;
let fake: FakeAnthropic;
let mcp: FakeMcp;
let api: ReturnType<typeof client>;
let key: string;
let appId: string;
let channelId: string;
const MCP_TOKEN = 'mcp-bearer-token-0123456789';
const BUNDLE = { 'CLAUDE.md': '# Project marker: HERON-7\n', 'notes/keep.txt': 'keep me\n', 'notes/shared.txt': 'one\ntwo\nthree\n' };

beforeAll(async () => {
  fake = await startFakeAnthropic();
  mcp = await startFakeMcp(MCP_TOKEN);
  t = await startTestServer({ listen: true, config: { anthropicBaseUrl: fake.url, anthropicApiKey: fake.apiKey, runLeaseSeconds: 4 } });
  key = (await t.org()).key;
  api = client(t, key);
  const app = await api.call('POST', '/v1/app/create', { slug: 'agent', type: 'claude', credentials: [{ type: 'static_bearer', mcp_server_url: mcp.url, token: MCP_TOKEN }] });
  appId = app.body.data.id;
  await deploy(t, key, appId, BUNDLE);
  channelId = (await api.call('POST', '/v1/channel/create', { appId, slug: 'api', type: 'api' })).body.data.id;
});

afterAll(async () => {
  await t?.close();
  await fake?.close();
  await mcp?.close();
});

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/** Records how each instance ending from now on ends (an instance-ended hook, as channels use). */
function endedStatuses(): Map<string, string> {
  const ended = new Map<string, string>();
  instanceEndedHooks.push(async (_ctx, _tx, instance) => void ended.set(instance.id, instance.status));
  return ended;
}

describe('a turn', () => {
  it('runs a Write tool turn: events, a new state with the file, complete instance and history records', async () => {
    const content = 'hello from the agent\n';
    fake.script(
      dynamic('WRITE-A-FILE', (r) => [
        { type: 'text', text: 'Writing it. ' },
        { type: 'tool_use', id: 'toolu_write_1', name: 'Write', input: { file_path: path.join(workDirOf(r, t.config.dataDir), 'notes', 'hello.txt'), content } },
      ]),
    );
    fake.script(afterTool('toolu_write_1', { blocks: [{ type: 'text', text: 'The file is written.' }] }));

    const res = await api.run({ appId, channelId, userId: 'alice', input: 'WRITE-A-FILE please', sessionId: 'conv-alice-1' });
    expect(res.status).toBe(200);
    expect(res.body.data).toEqual({ instanceId: expect.stringMatching(/^inst-/), sessionId: 'conv-alice-1', profileId: expect.stringMatching(/^prof-/), status: 'queued' });
    const { instanceId, profileId } = res.body.data;

    const events = await api.events(instanceId);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events[0]).toMatchObject({ seq: 1, type: 'status', data: { status: 'queued' }, done: false });
    expect(events[1]).toMatchObject({ type: 'status', data: { status: 'running' } });
    const toolPath = events.find((e) => e.type === 'tool.call')!.data.input.file_path;
    expect(events.filter((e) => e.type === 'tool.call').map((e) => e.data)).toEqual([{ id: 'toolu_write_1', name: 'Write', input: { file_path: toolPath, content } }]);
    expect(events.filter((e) => e.type === 'tool.result').map((e) => e.data)).toEqual([{ toolCallId: 'toolu_write_1', output: expect.any(String), isError: false }]);
    expect(texts(events)).toBe('Writing it. The file is written.');
    expect(events.filter((e) => e.type === 'message').map((e) => e.data.content)).toEqual(['Writing it. ', 'The file is written.']);
    const last = events.at(-1)!;
    expect(last).toMatchObject({ type: 'result', done: true, data: { status: 'completed', output: 'The file is written.', error: null } });
    expect(events.filter((e) => e.done)).toHaveLength(1);
    expect(last.data.usage).toEqual({ inputTokens: 200, outputTokens: 30, costUsd: expect.any(Number) });
    // The app's CLAUDE.md was in the working directory (settingSources: project).
    expect(allText(fake.requests.at(-2)!.body)).toContain('HERON-7');

    const instance = await api.instance(instanceId);
    expect(instance).toMatchObject({
      id: instanceId,
      appId,
      channelId,
      sessionId: 'conv-alice-1',
      profileId,
      userId: 'alice',
      status: 'completed',
      input: 'WRITE-A-FILE please',
      output: 'The file is written.',
      error: null,
      usage: last.data.usage,
      stateId: expect.stringMatching(/^state-/),
      startedAt: expect.any(String),
      completedAt: expect.any(String),
    });

    const profile = (await api.call('GET', `/v1/profile/${profileId}`)).body.data;
    expect(profile).toMatchObject({ identifier: 'alice', headStateId: instance.stateId, usage: { used: 1 } });
    const state = (await api.call('GET', `/v1/state/${instance.stateId}`)).body.data;
    expect(state).toMatchObject({ profileId, number: 2, source: 'run', status: 'ready', isHead: true });
    expect(state.files).toEqual([
      { name: 'CLAUDE.md', hash: `sha256-${sha(BUNDLE['CLAUDE.md'])}`, size: BUNDLE['CLAUDE.md'].length },
      { name: 'notes/hello.txt', hash: `sha256-${sha(content)}`, size: content.length },
      { name: 'notes/keep.txt', hash: `sha256-${sha(BUNDLE['notes/keep.txt'])}`, size: BUNDLE['notes/keep.txt'].length },
      { name: 'notes/shared.txt', hash: `sha256-${sha(BUNDLE['notes/shared.txt'])}`, size: BUNDLE['notes/shared.txt'].length },
    ]);

    const history = (await api.call('GET', `/v1/history/list?sessionId=conv-alice-1`)).body.data;
    expect(history.items).toEqual([
      expect.objectContaining({ instanceId, appId, channelId, sessionId: 'conv-alice-1', profileId, userId: 'alice', status: 'completed', input: 'WRITE-A-FILE please', output: 'The file is written.', usage: last.data.usage }),
    ]);
    const session = (await api.call('GET', '/v1/session/conv-alice-1')).body.data;
    expect(session).toMatchObject({ appId, type: 'single', profileId, lastInstanceId: instanceId, turns: 1 });
  });
});

describe('text PostgreSQL cannot store', () => {
  it('a NUL in a tool output and in the reply: every event is kept, and the turn ends completed with its output', async () => {
    fake.script(onTurn('NUL-BYTES', { blocks: [{ type: 'tool_use', id: 'toolu_nul', name: 'Bash', input: { command: "printf 'x\\000y'", description: 'print' } }] }));
    fake.script(afterTool('toolu_nul', { blocks: [{ type: 'text', text: ['before ', 'a\u0000b', ' after'] }] }));
    const run = (await api.run({ appId, channelId, userId: 'nul-user', input: 'NUL-BYTES' })).body.data;
    const events = await api.events(run.instanceId);
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(['tool.call', 'tool.result', 'text.delta', 'message', 'result']));
    // Each NUL is stored as U+FFFD, the replacement character.
    const result = events.find((e) => e.type === 'tool.result')!.data as { output: string };
    expect(result.output).toContain('x\uFFFDy');
    expect(events.at(-1)!.data, JSON.stringify(events.slice(-3))).toMatchObject({ status: 'completed', output: 'before a\uFFFDb after' });
    const stored = await t.ctx.db.selectFrom('instances').select(['status', 'output']).where('id', '=', run.instanceId).executeTakeFirstOrThrow();
    expect(stored).toEqual({ status: 'completed', output: 'before a\uFFFDb after' });
  });
});

describe('sessions', () => {
  it('a second turn on the session sees the first turn; a turn on a new session does not', async () => {
    fake.script(onTurn('REMEMBER-PELICAN', { blocks: [{ type: 'text', text: 'Noted: PELICAN.' }] }));
    const one = (await api.run({ appId, channelId, userId: 'bob', input: 'REMEMBER-PELICAN as the code word' })).body.data;
    expect(one.sessionId).toMatch(/^sess-[A-Za-z0-9]{16}$/);
    await api.events(one.instanceId);

    const recall = fake.script(onTurn('WHAT-WAS-IT', { blocks: [{ type: 'text', text: 'It was PELICAN.' }] }));
    const two = (await api.run({ appId, channelId, userId: 'bob', input: 'WHAT-WAS-IT?', sessionId: one.sessionId })).body.data;
    expect(two).toMatchObject({ sessionId: one.sessionId, profileId: one.profileId });
    expect((await api.events(two.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'It was PELICAN.' });
    const history = (await recall.request).body.messages;
    expect(allText({ messages: history })).toContain('REMEMBER-PELICAN as the code word');
    // The second turn runs where the first did: Claude Code sees the same CLAUDE.md, unchanged,
    // and tells the model nothing about instruction files that moved.
    expect(allText((await recall.request).body)).not.toMatch(/no longer present|re-read/i);
    expect(history.some((m: any) => m.role === 'assistant' && JSON.stringify(m.content).includes('Noted: PELICAN.'))).toBe(true);

    const fresh = fake.script(onTurn('FRESH-START', { blocks: [{ type: 'text', text: 'Which code word?' }] }));
    const three = (await api.run({ appId, channelId, userId: 'bob', input: 'FRESH-START: what was the code word?' })).body.data;
    expect(three.sessionId).not.toBe(one.sessionId);
    await api.events(three.instanceId);
    expect(allText((await fresh.request).body)).not.toContain('PELICAN');

    const session = (await api.call('GET', `/v1/session/${one.sessionId}`)).body.data;
    expect(session).toMatchObject({ turns: 2, lastInstanceId: two.instanceId, profileId: one.profileId });
    const usage = (await api.call('GET', `/v1/profile/${one.profileId}`)).body.data.usage;
    expect(usage).toEqual({ used: 3, limit: null, resetsAt: null });
  });

  it("a turn's directory is gone before its end commits: the session's next turn, which that commit starts, sets it up afresh", async () => {
    const where = { root: '' };
    fake.script(dynamic('CLEANUP-ONE', (r) => ((where.root = path.dirname(workDirOf(r, t.config.dataDir))), [{ type: 'text', text: 'One.' }])));
    const next = fake.script(onTurn('CLEANUP-TWO', { blocks: [{ type: 'text', text: 'Two.' }] }));
    const first = (await api.run({ appId, channelId, userId: 'cleo', input: 'CLEANUP-ONE', sessionId: 'cleo-1' })).body.data;
    // Removed after the commit instead, it could remove the next turn's directory under it.
    const presentAtCommit: boolean[] = [];
    instanceEndedHooks.push(async (_ctx, _tx, instance) => void (instance.id === first.instanceId && presentAtCommit.push(existsSync(where.root))));
    const second = (await api.run({ appId, channelId, userId: 'cleo', input: 'CLEANUP-TWO', sessionId: 'cleo-1' })).body.data;
    const end = (await api.events(second.instanceId)).at(-1)!.data;
    expect(end, String(end.error)).toMatchObject({ status: 'completed', output: 'Two.' });
    expect(allText((await next.request).body)).toContain('One.');
    expect(presentAtCommit).toEqual([false]);
  });

  it('runs one session one turn at a time in arrival order; a queued stop ends at once and the chain goes on', async () => {
    const slow = fake.script(onTurn('FIRST-SLOW', { blocks: [{ type: 'text', text: ['one ', 'two ', 'three'] }], pauseAfter: 1 }));
    fake.script(onTurn('THIRD-TURN', { blocks: [{ type: 'text', text: 'Third done.' }] }));
    const sessionId = 'ordered-session';
    const a = (await api.run({ appId, channelId, userId: 'carol', input: 'FIRST-SLOW', sessionId })).body.data;
    const b = (await api.run({ appId, channelId, userId: 'carol', input: 'SECOND-NEVER-RUNS', sessionId })).body.data;
    const c = (await api.run({ appId, channelId, userId: 'carol', input: 'THIRD-TURN', sessionId })).body.data;
    await slow.paused;
    expect((await api.instance(b.instanceId)).status).toBe('queued');
    expect((await api.instance(c.instanceId)).status).toBe('queued');
    const used = async () => (await api.call('GET', `/v1/profile/${a.profileId}`)).body.data.usage.used;
    expect(await used()).toBe(3);

    const stopped = await api.stop(b.instanceId);
    expect(stopped.status).toBe(200);
    expect(stopped.body.data).toEqual({ instanceId: b.instanceId, status: 'stopped' });
    const bEvents = await api.events(b.instanceId);
    expect(bEvents.map((e) => [e.type, e.data.status])).toEqual([['status', 'queued'], ['result', 'stopped']]);
    expect(bEvents.at(-1)).toMatchObject({ done: true, data: { output: null, error: null, usage: { inputTokens: 0, outputTokens: 0, costUsd: 0 } } });
    expect((await api.instance(c.instanceId)).status).toBe('queued');
    // It never ran, so it does not count toward the user's limit.
    expect(await used()).toBe(2);

    slow.resume();
    expect((await api.events(a.instanceId)).at(-1)!.data.status).toBe('completed');
    expect((await api.events(c.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Third done.' });
    const [ia, ic] = [await api.instance(a.instanceId), await api.instance(c.instanceId)];
    expect(Date.parse(ic.startedAt)).toBeGreaterThanOrEqual(Date.parse(ia.completedAt));
    expect(fake.requests.some((r) => allText(r.body).includes('SECOND-NEVER-RUNS'))).toBe(false);
    // An ended instance is left as it is.
    expect((await api.stop(a.instanceId)).body.data).toEqual({ instanceId: a.instanceId, status: 'completed' });
    expect((await api.call('GET', `/v1/session/${sessionId}`)).body.data.turns).toBe(3);
    expect(await used()).toBe(2);
  });

  it('stop during a slow stream ends the turn stopped with its partial output, and the next turn succeeds', async () => {
    const slow = fake.script(onTurn('TELL-ME-SLOWLY', { blocks: [{ type: 'text', text: ['Partial ', 'answer ', 'NEVER-STREAMED'] }], pauseAfter: 2 }));
    const run = (await api.run({ appId, channelId, userId: 'dave', input: 'TELL-ME-SLOWLY', sessionId: 'dave-1' })).body.data;
    await slow.paused;
    await api.streamed(run.instanceId, 'Partial answer ');
    const stop = await api.stop(run.instanceId);
    expect(stop.body.data).toEqual({ instanceId: run.instanceId, status: 'stopped' });
    await slow.disconnected;
    const events = await api.events(run.instanceId);
    expect(texts(events)).toBe('Partial answer ');
    expect(events.at(-1)).toMatchObject({ type: 'result', done: true, data: { status: 'stopped', output: 'Partial answer ', error: null } });
    expect(await api.instance(run.instanceId)).toMatchObject({ status: 'stopped', output: 'Partial answer ' });

    const next = fake.script(onTurn('GO-ON', { blocks: [{ type: 'text', text: 'Continuing.' }] }));
    const two = (await api.run({ appId, channelId, userId: 'dave', input: 'GO-ON', sessionId: 'dave-1' })).body.data;
    expect((await api.events(two.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Continuing.' });
    const seen = allText((await next.request).body);
    expect(seen).toContain('TELL-ME-SLOWLY');
    expect(seen).toContain('Partial answer');
    expect(seen).not.toContain('NEVER-STREAMED');
    const history = (await api.call('GET', '/v1/history/list?sessionId=dave-1')).body.data.items;
    expect(history.map((h: any) => h.status)).toEqual(['completed', 'stopped']);
  });

  it('a turn stopped before the model saw its input (fetching its image): stopped at once, and the next turn holds the input once', async () => {
    // An image server that takes the request and never answers.
    let asked!: () => void;
    const fetching = new Promise<void>((resolve) => (asked = resolve));
    const silent = http.createServer(() => asked());
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/cat.png`;
      const run = (await api.run({ appId, channelId, userId: 'erin', input: 'LOOK-AT-THIS-CAT', sessionId: 'erin-1', images: [{ url }] })).body.data;
      await fetching;
      expect((await api.stop(run.instanceId)).body.data).toEqual({ instanceId: run.instanceId, status: 'stopped' });
      expect((await api.events(run.instanceId)).at(-1)).toMatchObject({ type: 'result', data: { status: 'stopped', output: null, error: null } });
    } finally {
      silent.closeAllConnections();
      silent.close();
    }
    const next = fake.script(onTurn('AND-THIS-DOG', { blocks: [{ type: 'text', text: 'Both seen.' }] }));
    const two = (await api.run({ appId, channelId, userId: 'erin', input: 'AND-THIS-DOG', sessionId: 'erin-1' })).body.data;
    expect((await api.events(two.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Both seen.' });
    expect(allText((await next.request).body).split('LOOK-AT-THIS-CAT')).toHaveLength(2);

    // Delivered once: the turn after that has it from the conversation, not again in its prompt.
    const third = fake.script(onTurn('AND-A-BIRD', { blocks: [{ type: 'text', text: 'Noted.' }] }));
    const three = (await api.run({ appId, channelId, userId: 'erin', input: 'AND-A-BIRD', sessionId: 'erin-1' })).body.data;
    await api.events(three.instanceId);
    const seen = allText((await third.request).body);
    expect(seen.split('LOOK-AT-THIS-CAT')).toHaveLength(2);
    expect(seen.split('AND-THIS-DOG')).toHaveLength(2);
  });

  it('a turn stopped as soon as it runs stays in the conversation: the next turn holds its input once', async () => {
    // For the turn itself, if the model is reached before the stop; not for the next turn's
    // prompt, which may carry this input.
    const own = (r: { body: unknown }) => turnText(r.body).includes('STOP-ME-AT-ONCE') && !turnText(r.body).includes('AFTER-THE-STOP');
    fake.script({ blocks: [{ type: 'text', text: ['never ', 'mind'] }], pauseAfter: 1, match: own });
    const run = (await api.run({ appId, channelId, userId: 'fay', input: 'STOP-ME-AT-ONCE', sessionId: 'fay-1' })).body.data;
    await eventually(async () => (await api.instance(run.instanceId)).status === 'running', 'the turn to run');
    await api.stop(run.instanceId);
    const result = (await api.events(run.instanceId)).at(-1)!.data;
    expect(result.status).toBe('stopped');
    expect(result.output === null || result.output.length > 0).toBe(true); // never ""
    const next = fake.script(onTurn('AFTER-THE-STOP', { blocks: [{ type: 'text', text: 'Right.' }] }));
    const two = (await api.run({ appId, channelId, userId: 'fay', input: 'AFTER-THE-STOP', sessionId: 'fay-1' })).body.data;
    await api.events(two.instanceId);
    expect(allText((await next.request).body).split('STOP-ME-AT-ONCE')).toHaveLength(2);
  });

  it('refuses a session of another user or another app, and an unknown userId creates the profile', async () => {
    fake.script(onTurn('ERIN-HELLO', { blocks: [{ type: 'text', text: 'Hi Erin.' }] }));
    const erin = await api.run({ appId, channelId, userId: 'erin', input: 'ERIN-HELLO', sessionId: 'erin-only' });
    expect(erin.status).toBe(200);
    const profile = (await api.call('GET', `/v1/profile/erin?appId=${appId}`)).body.data;
    expect(profile).toMatchObject({ id: erin.body.data.profileId, identifier: 'erin', baseVersionId: expect.stringMatching(/^ver-/) });

    const frank = await api.run({ appId, channelId, userId: 'frank', input: 'hello', sessionId: 'erin-only' });
    expect(frank.status).toBe(409);
    expect(frank.body.error).toContain('erin-only');
    // A refused first run creates nothing, not even the user's profile.
    expect((await api.call('GET', `/v1/profile/frank?appId=${appId}`)).status).toBe(404);
    const otherApp = (await api.call('POST', '/v1/app/create', { slug: 'second-app', type: 'claude' })).body.data.id;
    await deploy(t, key, otherApp, BUNDLE);
    const otherChannel = (await api.call('POST', '/v1/channel/create', { appId: otherApp, slug: 'api', type: 'api' })).body.data.id;
    const crossApp = await api.run({ appId: otherApp, channelId: otherChannel, userId: 'erin', input: 'hello', sessionId: 'erin-only' });
    expect(crossApp.status).toBe(409);
    // Neither refused run was charged or recorded.
    expect((await api.call('GET', `/v1/instance/list?appId=${otherApp}`)).body.data.total).toBe(0);
    expect((await api.call('GET', `/v1/profile/list?appId=${otherApp}`)).body.data.total).toBe(0);
    await api.events(erin.body.data.instanceId);
  });

  it('deleting a session stops its turns; a new session of the same id is a new conversation', async () => {
    const slow = fake.script(onTurn('GINA-PRIVATE-1', { blocks: [{ type: 'text', text: ['Secret ', 'reply ', 'never sent'] }], pauseAfter: 1 }));
    const sessionId = 'reused-id';
    const first = (await api.run({ appId, channelId, userId: 'gina', input: 'GINA-PRIVATE-1', sessionId })).body.data;
    const queued = (await api.run({ appId, channelId, userId: 'gina', input: 'GINA-PRIVATE-2', sessionId })).body.data;
    await slow.paused;
    const deleted = await api.call('DELETE', `/v1/session/${sessionId}`);
    expect(deleted.body.data).toEqual({ id: sessionId, deleted: true });
    // The queued turn ended at once; the running one stops.
    expect((await api.instance(queued.instanceId)).status).toBe('stopped');
    expect((await api.events(first.instanceId)).at(-1)!.data.status).toBe('stopped');
    expect((await api.events(queued.instanceId)).map((e) => [e.type, e.data.status])).toEqual([['status', 'queued'], ['result', 'stopped']]);

    // Another user may now take the id: a new session, with none of the old conversation.
    const hello = fake.script(onTurn('HANK-HELLO', { blocks: [{ type: 'text', text: 'Hello Hank.' }] }));
    const hank = await api.run({ appId, channelId, userId: 'hank', input: 'HANK-HELLO', sessionId });
    expect(hank.status).toBe(200);
    expect((await api.events(hank.body.data.instanceId)).at(-1)!.data.status).toBe('completed');
    expect(allText((await hello.request).body)).not.toContain('GINA-PRIVATE');
    expect(fake.requests.some((r) => allText(r.body).includes('GINA-PRIVATE-2'))).toBe(false);
    const session = (await api.call('GET', `/v1/session/${sessionId}`)).body.data;
    expect(session).toMatchObject({ profileId: hank.body.data.profileId, turns: 1, lastInstanceId: hank.body.data.instanceId });
    // The session's history is Hank's turn only; Gina's turns stay in her own history.
    const history = (await api.call('GET', `/v1/history/list?sessionId=${sessionId}`)).body.data;
    expect(history.items.map((h: any) => h.instanceId)).toEqual([hank.body.data.instanceId]);
    const gina = (await api.call('GET', `/v1/history/list?profileId=${first.profileId}&pageSize=100`)).body.data.items.map((h: any) => h.instanceId);
    expect(gina).toEqual(expect.arrayContaining([first.instanceId, queued.instanceId]));
  });
});

describe('deleting a profile', () => {
  it('stops its turns, then removes its instances, their events and its history', async () => {
    fake.script(onTurn('IVY-FIRST', { blocks: [{ type: 'text', text: 'Hello Ivy.' }] }));
    const done = (await api.run({ appId, channelId, userId: 'ivy', input: 'IVY-FIRST', sessionId: 'ivy-1' })).body.data;
    await api.events(done.instanceId);
    // The running turn writes a file, then streams: the deletion stops it mid-reply.
    fake.script(dynamic('IVY-SLOW', (r) => [{ type: 'tool_use', id: 'toolu_ivy_write', name: 'Write', input: { file_path: path.join(workDirOf(r, t.config.dataDir), 'ivy.txt'), content: 'mine\n' } }]));
    const slow = fake.script(afterTool('toolu_ivy_write', { blocks: [{ type: 'text', text: ['Slow ', 'reply'] }], pauseAfter: 1 }));
    const running = (await api.run({ appId, channelId, userId: 'ivy', input: 'IVY-SLOW', sessionId: 'ivy-1' })).body.data;
    const queued = (await api.run({ appId, channelId, userId: 'ivy', input: 'IVY-NEVER', sessionId: 'ivy-1' })).body.data;
    await slow.paused;
    const rows = (table: 'instances' | 'history') => t.ctx.db.selectFrom(table).select('id').where('profileId', '=', done.profileId).execute();
    expect(await rows('instances')).toHaveLength(3);

    const ended = endedStatuses();
    expect((await api.call('DELETE', `/v1/profile/${done.profileId}`)).body.data).toEqual({ id: done.profileId, status: 'deleting' });
    await slow.disconnected; // the running turn was stopped
    await eventually(async () => (await api.call('GET', `/v1/profile/${done.profileId}`)).status === 404, 'the profile to be deleted');
    // Both ended stopped, as response/stop ends them, though the running one had written a file.
    expect(Object.fromEntries(ended)).toEqual({ [running.instanceId]: 'stopped', [queued.instanceId]: 'stopped' });
    expect(await rows('instances')).toEqual([]);
    expect(await rows('history')).toEqual([]);
    expect(await t.ctx.db.selectFrom('events').select('seq').where('instanceId', 'in', [done.instanceId, running.instanceId, queued.instanceId]).execute()).toEqual([]);
    expect((await api.call('GET', `/v1/instance/${done.instanceId}`)).status).toBe(404);
    expect((await api.call('GET', '/v1/history/list?sessionId=ivy-1')).body.data.total).toBe(0);
    expect(fake.requests.some((r) => allText(r.body).includes('IVY-NEVER'))).toBe(false);
  });
});

describe('deleting an app', () => {
  it('stops its turns first: each ends stopped, and a poll waiting on one answers', async () => {
    const doomed = (await api.call('POST', '/v1/app/create', { slug: 'doomed', type: 'claude' })).body.data.id;
    await deploy(t, key, doomed, BUNDLE);
    const ch = (await api.call('POST', '/v1/channel/create', { appId: doomed, slug: 'api', type: 'api' })).body.data.id;
    const slow = fake.script(onTurn('DOOMED-SLOW', { blocks: [{ type: 'text', text: ['Going ', 'on'] }], pauseAfter: 1 }));
    const running = (await api.run({ appId: doomed, channelId: ch, userId: 'jay', input: 'DOOMED-SLOW', sessionId: 'doomed-1' })).body.data;
    const queued = (await api.run({ appId: doomed, channelId: ch, userId: 'jay', input: 'DOOMED-NEVER', sessionId: 'doomed-1' })).body.data;
    await slow.paused;
    const seen = (await api.poll(running.instanceId)).body.data.cursor;
    const waiting = api.poll(running.instanceId, seen, 60_000);
    const ended = endedStatuses();
    expect((await api.call('DELETE', `/v1/app/${doomed}`)).status).toBe(200);
    await slow.disconnected;
    const answer = await waiting;
    // The poll wakes with the turn's last events, or finds it already removed with the app.
    if (answer.status === 200) expect(answer.body.data.events.length).toBeGreaterThan(0);
    else expect(answer.status).toBe(404);
    await eventually(async () => (await api.call('GET', `/v1/app/${doomed}`)).status === 404, 'the app to be deleted');
    expect(Object.fromEntries(ended)).toEqual({ [running.instanceId]: 'stopped', [queued.instanceId]: 'stopped' });
    expect(fake.requests.some((r) => allText(r.body).includes('DOOMED-NEVER'))).toBe(false);
  });
});

describe('files', () => {
  /** Scripts a turn that reads notes/shared.txt, writes `writes` (path → content), then answers `last`. */
  function editTurn(marker: string, writes: Record<string, string>, last: Omit<FakeScript, 'match'>) {
    const cwd = { dir: '' };
    fake.script(
      dynamic(marker, (r) => {
        cwd.dir = workDirOf(r, t.config.dataDir);
        return [{ type: 'tool_use', id: `toolu_read_${marker}`, name: 'Read', input: { file_path: path.join(cwd.dir, 'notes', 'shared.txt') } }];
      }),
    );
    fake.script({
      ...afterTool(`toolu_read_${marker}`, {}),
      get blocks() {
        return Object.entries(writes).map(([file, content], i) => ({ type: 'tool_use' as const, id: `toolu_write_${marker}_${i}`, name: 'Write', input: { file_path: path.join(cwd.dir, file), content } }));
      },
    });
    return fake.script(afterTool(`toolu_write_${marker}_${Object.keys(writes).length - 1}`, last));
  }

  it('overlapping runs of one profile each commit their files, merged three-way onto the head', async () => {
    const a = editTurn('MERGE-A', { 'a.txt': 'from A\n', 'notes/shared.txt': 'ONE\ntwo\nthree\n' }, { blocks: [{ type: 'text', text: ['A is ', 'done.'] }], pauseAfter: 1 });
    const runA = (await api.run({ appId, channelId, userId: 'pat', input: 'MERGE-A', sessionId: 'pat-a' })).body.data;
    await a.paused; // A wrote its files and is still running
    editTurn('MERGE-B', { 'b.txt': 'from B\n', 'notes/shared.txt': 'one\ntwo\nTHREE\n' }, { blocks: [{ type: 'text', text: 'B is done.' }] });
    const runB = (await api.run({ appId, channelId, userId: 'pat', input: 'MERGE-B', sessionId: 'pat-b' })).body.data;
    expect((await api.events(runB.instanceId)).at(-1)!.data.status).toBe('completed');
    a.resume();
    expect((await api.events(runA.instanceId)).at(-1)!.data.status).toBe('completed');

    const [ia, ib] = [await api.instance(runA.instanceId), await api.instance(runB.instanceId)];
    const head = (await api.call('GET', `/v1/state/${ia.stateId}`)).body.data;
    expect(head).toMatchObject({ source: 'run', isHead: true, parentStateId: ib.stateId });
    const files = Object.fromEntries(head.files.map((f: any) => [f.name, f.hash]));
    expect(files).toMatchObject({
      'a.txt': `sha256-${sha('from A\n')}`,
      'b.txt': `sha256-${sha('from B\n')}`,
      'notes/shared.txt': `sha256-${sha('ONE\ntwo\nTHREE\n')}`,
      'notes/keep.txt': `sha256-${sha(BUNDLE['notes/keep.txt'])}`,
    });
  });

  it('overlapping runs that make one path a file and a folder: the head keeps its side, and the profile runs on', async () => {
    const a = editTurn('CLASH-A', { out: 'a file\n', 'a-only.txt': 'kept\n' }, { blocks: [{ type: 'text', text: ['A is ', 'done.'] }], pauseAfter: 1 });
    const runA = (await api.run({ appId, channelId, userId: 'cleo', input: 'CLASH-A', sessionId: 'cleo-a' })).body.data;
    await a.paused; // A wrote `out` and is still running
    editTurn('CLASH-B', { 'out/report.md': 'a report\n' }, { blocks: [{ type: 'text', text: 'B is done.' }] });
    const runB = (await api.run({ appId, channelId, userId: 'cleo', input: 'CLASH-B', sessionId: 'cleo-b' })).body.data;
    expect((await api.events(runB.instanceId)).at(-1)!.data.status).toBe('completed');
    a.resume();
    expect((await api.events(runA.instanceId)).at(-1)!.data.status).toBe('completed');
    const head = (await api.call('GET', `/v1/state/${(await api.instance(runA.instanceId)).stateId}`)).body.data;
    const names = head.files.map((f: { name: string }) => f.name);
    expect(names).toContain('out/report.md');
    expect(names).toContain('a-only.txt');
    expect(names).not.toContain('out');

    fake.script(onTurn('CLASH-C', { blocks: [{ type: 'text', text: 'Hello again.' }] }));
    const runC = (await api.run({ appId, channelId, userId: 'cleo', input: 'CLASH-C', sessionId: 'cleo-c' })).body.data;
    const end = (await api.events(runC.instanceId)).at(-1)!.data;
    expect(end, String(end.error)).toMatchObject({ status: 'completed', output: 'Hello again.' });
  });

  it('a turn that changes no file leaves the head as it was', async () => {
    fake.script(onTurn('JUST-TALK', { blocks: [{ type: 'text', text: 'Nothing to change.' }] }));
    const run = (await api.run({ appId, channelId, userId: 'quinn', input: 'JUST-TALK' })).body.data;
    await api.events(run.instanceId);
    const profile = (await api.call('GET', `/v1/profile/${run.profileId}`)).body.data;
    expect(await api.instance(run.instanceId)).toMatchObject({ status: 'completed', stateId: profile.headStateId });
    expect((await api.call('GET', `/v1/state/list?profileId=${run.profileId}`)).body.data.total).toBe(1);
  });
});

describe('what a turn leaves on the worker', () => {
  it('nothing of the user once it ends: its working directory and its HOME (Claude Code config) go, and only the working directory is committed', async () => {
    // The agent writes into its HOME, the turn's scratch dir (Claude Code's config dir too).
    const home = { dir: '' };
    fake.script(
      dynamic('WRITE-HOME', () => [{ type: 'tool_use', id: 'toolu_home_1', name: 'Write', input: { file_path: path.join(home.dir, 'diary.txt'), content: 'private\n' } }]),
    );
    fake.script(afterTool('toolu_home_1', { blocks: [{ type: 'text', text: 'Noted.' }] }));
    const run = (await api.run({ appId, channelId, userId: 'rosa', input: 'WRITE-HOME', sessionId: 'rosa-1' })).body.data;
    home.dir = path.join(t.config.dataDir, 'runs', `${run.instanceId}-home`); // before the turn's first request: it waits on a worker
    expect((await api.events(run.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'Noted.' });
    const { stateId } = await api.instance(run.instanceId);
    const files = (await api.call('GET', `/v1/state/${stateId}`)).body.data.files.map((f: { name: string }) => f.name);
    expect(files).not.toContain('diary.txt');
    expect(files.some((f: string) => f.startsWith('home/') || f.startsWith('.claude.json'))).toBe(false);
    await eventually(async () => (await fs.readdir(path.join(t.config.dataDir, 'runs'))).length === 0, 'the turn directories to be removed');
    // No per-profile Claude Code directory outlives the turns of this file either.
    expect(existsSync(path.join(t.config.dataDir, 'claude'))).toBe(false);
  });
});

describe('events', () => {
  it('long-polls: waits while there is nothing new and answers within milliseconds of the next event', async () => {
    const slow = fake.script(onTurn('WAIT-FOR-ME', { blocks: [{ type: 'text', text: ['first ', 'second'] }], pauseAfter: 1 }));
    const run = (await api.run({ appId, channelId, userId: 'gina', input: 'WAIT-FOR-ME' })).body.data;
    await slow.paused;
    const seen = await eventually(async () => {
      const res = await api.poll(run.instanceId);
      return res.body.data.events.some((e: any) => e.type === 'text.delta') && res.body.data;
    }, 'the first delta');
    expect(seen).toMatchObject({ instanceId: run.instanceId, status: 'running', done: false });

    // Nothing after the cursor: a zero timeout answers at once with no events.
    const empty = await api.poll(run.instanceId, seen.cursor, 0);
    expect(empty.body.data).toEqual({ instanceId: run.instanceId, status: 'running', events: [], cursor: seen.cursor, done: false });

    const started = Date.now();
    const waiting = api.poll(run.instanceId, seen.cursor, 30_000);
    let answered = 0;
    void waiting.then(() => (answered = Date.now()));
    await new Promise((r) => setTimeout(r, 300)); // the poll must still be waiting: no event yet
    expect(answered).toBe(0);
    slow.resume();
    const res = await waiting;
    expect(res.body.data.events[0]).toMatchObject({ seq: seen.cursor + 1, type: 'text.delta', data: { text: 'second' } });
    // Woken by the event, not by the timeout (the 50 ms bound is measured across processes
    // in workers.test.ts, with samples: this file shares two cores with Claude Code processes).
    expect(answered - Date.parse(res.body.data.events[0].createdAt)).toBeLessThan(1_000);
    expect(answered - started).toBeGreaterThanOrEqual(300);

    const all = await api.events(run.instanceId);
    const lastSeq = all.at(-1)!.seq;
    // Past the end of an ended instance: at once, done, no events, cursor = after.
    const t0 = Date.now();
    const past = await api.poll(run.instanceId, lastSeq + 5, 30_000);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(past.body.data).toEqual({ instanceId: run.instanceId, status: 'completed', events: [], cursor: lastSeq + 5, done: true });
    const tail = await api.poll(run.instanceId, lastSeq - 1, 30_000);
    expect(tail.body.data).toMatchObject({ cursor: lastSeq, done: true, events: [{ seq: lastSeq, type: 'result', done: true }] });
  });

  it('streams server-sent events; a client that reconnects with Last-Event-ID gets exactly the rest', async () => {
    const slow = fake.script(onTurn('STREAM-ME', { blocks: [{ type: 'text', text: ['a ', 'b ', 'c ', 'd ', 'e'] }], pauseAfter: 2 }));
    const run = (await api.run({ appId, channelId, userId: 'hank', input: 'STREAM-ME' })).body.data;
    const url = `${t.url}/v1/response/stream/${run.instanceId}`;
    const first = await readSse(url, key, { stopAfter: 3 });
    expect(first.status).toBe(200);
    expect(first.events.map((e) => e.id)).toEqual([1, 2, 3]);
    expect(first.events[0]).toMatchObject({ id: 1, event: 'status', data: { seq: 1, type: 'status', data: { status: 'queued' }, done: false } });
    await slow.paused;
    const rest = readSse(url, key, { lastEventId: '3' });
    slow.resume();
    const second = await rest;
    expect(second.closedByServer).toBe(true);
    const polled = await api.events(run.instanceId);
    expect(second.events.map((e) => e.data)).toEqual(polled.slice(3));
    expect(second.events.map((e) => [e.id, e.event])).toEqual(polled.slice(3).map((e) => [e.seq, e.type]));
    expect(second.events.at(-1)!.data).toMatchObject({ type: 'result', done: true });
    expect(second.body).toContain(`id: ${polled.at(-1)!.seq}\nevent: result\ndata: {`);

    // Resuming at the end of an ended instance closes at once; a bad Last-Event-ID is a 400.
    const atEnd = await readSse(url, key, { lastEventId: String(polled.at(-1)!.seq) });
    expect(atEnd).toMatchObject({ status: 200, events: [], closedByServer: true });
    expect((await readSse(url, key, { lastEventId: 'x1' })).status).toBe(400);
    expect((await readSse(`${t.url}/v1/response/stream/inst-unknown`, key)).status).toBe(404);
  });
});

describe('access groups', () => {
  it('a group of limit 3: of 10 concurrent runs exactly 3 are accepted, 7 get 429 with the message', async () => {
    const limited = (await api.call('POST', '/v1/app/create', { slug: 'limited', type: 'claude', limit: { amount: 3, interval: 'daily', message: 'Three a day, come back tomorrow.' } })).body.data.id;
    await deploy(t, key, limited, BUNDLE);
    const ch = (await api.call('POST', '/v1/channel/create', { appId: limited, slug: 'api', type: 'api' })).body.data.id;
    fake.script(onTurn('LIMITED-RUN', { blocks: [{ type: 'text', text: 'Counted.' }], times: 3 }));
    const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => api.run({ appId: limited, channelId: ch, userId: 'ivy', input: `LIMITED-RUN ${i}` })));
    const accepted = replies.filter((r) => r.status === 200);
    const refused = replies.filter((r) => r.status !== 200);
    expect(accepted).toHaveLength(3);
    expect(refused).toHaveLength(7);
    for (const r of refused) expect(r).toMatchObject({ status: 429, body: { success: false, error: 'Three a day, come back tomorrow.', code: 'limit_exceeded' } });
    const profileId = accepted[0].body.data.profileId;
    expect(new Set(accepted.map((r) => r.body.data.profileId))).toEqual(new Set([profileId]));
    for (const r of accepted) expect((await api.events(r.body.data.instanceId)).at(-1)!.data.status).toBe('completed');
    expect((await api.call('GET', `/v1/instance/list?appId=${limited}`)).body.data.total).toBe(3);
    expect((await api.call('GET', `/v1/profile/${profileId}`)).body.data.usage).toMatchObject({ used: 3, limit: 3, resetsAt: expect.any(String) });
  });
});

describe('inputs', () => {
  it('gives the app credential to its MCP server as a bearer token, and images reach the model as image blocks', async () => {
    const images = http.createServer((req, res) => {
      if (req.url === '/pixel.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.from(PNG_1PX, 'base64'));
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => images.listen(0, '127.0.0.1', r));
    const imageUrl = `http://127.0.0.1:${(images.address() as AddressInfo).port}/pixel.png`;
    try {
      const seen = fake.script(onTurn('LOOK-AT-THIS', { blocks: [{ type: 'text', text: 'Two pixels.' }] }));
      mcp.requests.length = 0;
      const run = (await api.run({ appId, channelId, userId: 'judy', input: 'LOOK-AT-THIS', images: [{ mediaType: 'image/png', data: PNG_1PX }, { url: imageUrl }] })).body.data;
      expect((await api.events(run.instanceId)).at(-1)!.data.status).toBe('completed');
      const blocks = (await seen.request).body.messages.flatMap((m: any) => (Array.isArray(m.content) ? m.content : []));
      const imageBlocks = blocks.filter((b: any) => b.type === 'image');
      expect(imageBlocks).toEqual([
        { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG_1PX } },
        { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG_1PX } },
      ]);
      // Claude Code connected to the app's MCP server with the credential's token.
      expect(mcp.requests.map((r) => r.rpcMethod)).toEqual(expect.arrayContaining(['initialize', 'tools/list']));
      expect(mcp.requests.every((r) => r.headers.authorization === `Bearer ${MCP_TOKEN}`)).toBe(true);

      // Images alone are a valid run; an image URL that cannot be fetched fails the turn, saying why.
      fake.script({ match: (r) => JSON.stringify(r.body).includes(PNG_1PX), blocks: [{ type: 'text', text: 'A pixel.' }] });
      const only = (await api.run({ appId, channelId, userId: 'judy', images: [{ mediaType: 'image/png', data: PNG_1PX }] })).body.data;
      expect((await api.events(only.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'A pixel.' });
      expect((await api.instance(only.instanceId)).input).toBeNull();
      const broken = (await api.run({ appId, channelId, userId: 'judy', input: 'see', images: [{ url: `${imageUrl}-missing` }] })).body.data;
      const events = await api.events(broken.instanceId);
      expect(events.find((e) => e.type === 'error')!.data).toEqual({ message: expect.stringContaining('404'), code: 'image_unavailable' });
      expect(events.at(-1)!.data).toMatchObject({ status: 'failed', error: expect.stringContaining('404') });
    } finally {
      images.close();
    }
  });

  it('keeps MCP servers on private addresses away from the credential: refused at app/create, and the turn fails before connecting', async () => {
    t.config.allowPrivateUrls = false;
    try {
      const apps = (await api.call('GET', '/v1/app/list')).body.data.total;
      for (const url of ['http://169.254.169.254/latest/meta-data/', mcp.url, 'http://127.1/mcp', 'http://localhost:9/mcp']) {
        const credentials = [
          { type: 'static_bearer', mcp_server_url: 'http://93.184.215.14/mcp', token: MCP_TOKEN },
          { type: 'static_bearer', mcp_server_url: url, token: MCP_TOKEN },
        ];
        const res = await api.call('POST', '/v1/app/create', { slug: 'private-mcp', type: 'claude', credentials });
        expect(res.status, url).toBe(400);
        expect(res.body).toMatchObject({ success: false, error: expect.stringContaining('body.credentials.1.mcp_server_url') });
        expect(res.body.details).toEqual([{ field: 'body.credentials.1.mcp_server_url', message: expect.stringContaining('not allowed') }]);
      }
      expect((await api.call('GET', '/v1/app/list')).body.data.total).toBe(apps);

      // The app below was created while private URLs were allowed: its turn now fails, and
      // Claude Code never connects to the MCP server with the token.
      mcp.requests.length = 0;
      const run = (await api.run({ appId, channelId, userId: 'mallory', input: 'USE-THE-MCP-SERVER' })).body.data;
      const events = await api.events(run.instanceId);
      expect(events.find((e) => e.type === 'error')!.data).toEqual({ message: expect.stringContaining('not allowed'), code: 'mcp_server_refused' });
      expect(events.at(-1)!.data).toMatchObject({ status: 'failed', error: expect.stringContaining("app's MCP server") });
      expect(mcp.requests).toHaveLength(0);
    } finally {
      t.config.allowPrivateUrls = true;
    }
  });

  it('reaches MCP servers only through the server, which follows no redirect', async () => {
    // A server answering every request with a redirect to the app's real MCP server (which a
    // public URL could do to a loopback service).
    const redirector = http.createServer((req, res) => res.writeHead(307, { location: mcp.url }).end());
    await new Promise<void>((r) => redirector.listen(0, '127.0.0.1', r));
    try {
      const credentials = [{ type: 'static_bearer', mcp_server_url: `http://127.0.0.1:${(redirector.address() as AddressInfo).port}/mcp`, token: MCP_TOKEN }];
      const other = (await api.call('POST', '/v1/app/create', { slug: 'mcp-redirect', type: 'claude', credentials })).body.data.id;
      await deploy(t, key, other, BUNDLE);
      const channel = (await api.call('POST', '/v1/channel/create', { appId: other, slug: 'api', type: 'api' })).body.data.id;
      mcp.requests.length = 0;
      fake.script(onTurn('FOLLOW-ME', { blocks: [{ type: 'text', text: 'No tools today.' }] }));
      const run = (await api.run({ appId: other, channelId: channel, userId: 'redirected', input: 'FOLLOW-ME' })).body.data;
      expect((await api.events(run.instanceId)).at(-1)!.data).toMatchObject({ status: 'completed', output: 'No tools today.' });
      expect(mcp.requests).toHaveLength(0);
    } finally {
      redirector.close();
    }
  });

  it('validates the run request; refusals create and charge nothing', async () => {
    const before = (await api.call('GET', `/v1/instance/list?appId=${appId}`)).body.data.total;
    const bad = async (body: Record<string, unknown>, status = 400) => {
      const res = await api.run({ appId, channelId, userId: 'kim', ...body });
      expect(res.status, JSON.stringify(res.body)).toBe(status);
      expect(res.body.success).toBe(false);
      return res.body;
    };
    expect((await bad({})).error).toMatch(/input/);
    expect((await bad({ images: [] })).error).toMatch(/input/);
    await bad({ input: '' });
    await bad({ input: 'x', extra: 1 });
    await bad({ input: 'x', sessionId: 's'.repeat(129) });
    // Ids /v1/session/{id} could not address: the list route, and the URL dot segments.
    for (const sessionId of ['list', '.', '..']) expect((await bad({ input: 'x', sessionId })).error).toMatch(/sessionId/);
    await bad({ input: 'x', userId: '' });
    await bad({ images: [{ mediaType: 'image/bmp', data: PNG_1PX }] });
    await bad({ images: [{ mediaType: 'image/png' }] });
    expect((await bad({ images: [{ mediaType: 'image/png', data: 'not base64!' }] })).error).toMatch(/base64/);
    expect((await bad({ images: [{ mediaType: 'image/jpeg', data: PNG_1PX }] })).error).toMatch(/image\/jpeg/);
    expect((await bad({ images: [{ mediaType: 'image/png', data: `data:image/png;base64,${PNG_1PX}` }] })).error).toMatch(/prefix/);
    const big = Buffer.alloc(5 * 1024 * 1024 + 1);
    Buffer.from(PNG_1PX, 'base64').copy(big);
    expect((await bad({ images: [{ mediaType: 'image/png', data: big.toString('base64') }] })).error).toMatch(/5 MiB/);
    await bad({ images: Array.from({ length: 21 }, () => ({ mediaType: 'image/png', data: PNG_1PX })) });
    await bad({ images: [{ url: 'ftp://example.com/a.png' }] });
    await bad({ images: [{ url: 'https://example.com/a.png', data: PNG_1PX }] });
    await bad({ input: 'x', channelId: 'no-such-channel' }, 404);
    await bad({ input: 'x', appId: 'app-unknown' }, 404);
    const otherKey = (await t.org()).key;
    expect((await t.call('POST', '/v1/response/run', { key: otherKey, body: { appId, channelId, userId: 'kim', input: 'x' } })).status).toBe(404);

    // An app without a version: 409 no_head_version, nothing charged.
    const empty = (await api.call('POST', '/v1/app/create', { slug: 'no-version', type: 'claude' })).body.data.id;
    const emptyChannel = (await api.call('POST', '/v1/channel/create', { appId: empty, slug: 'api', type: 'api' })).body.data.id;
    const noHead = await api.run({ appId: empty, channelId: emptyChannel, userId: 'kim', input: 'x' });
    expect(noHead).toMatchObject({ status: 409, body: { code: 'no_head_version' } });
    // A channel of another app is not this app's channel.
    expect((await api.run({ appId, channelId: emptyChannel, userId: 'kim', input: 'x' })).status).toBe(404);
    expect((await api.call('GET', `/v1/instance/list?appId=${appId}`)).body.data.total).toBe(before);
    expect((await api.call('GET', `/v1/profile/kim?appId=${appId}`)).status).toBe(404);
  });

  it('Idempotency-Key never starts a turn twice', async () => {
    const script = fake.script(onTurn('ONLY-ONCE', { blocks: [{ type: 'text', text: 'Once.' }], times: Infinity }));
    const body = { appId, channelId, userId: 'leo', input: 'ONLY-ONCE' };
    const headers = { 'idempotency-key': 'run-leo-1' };
    const first = await api.run(body, headers);
    const again = await api.run(body, headers);
    expect(first.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect(again.headers['idempotent-replayed']).toBe('true');
    await api.events(first.body.data.instanceId);
    await script.request;
    const instances = (await api.call('GET', `/v1/instance/list?appId=${appId}&pageSize=100`)).body.data.items.filter((i: any) => i.userId === 'leo');
    expect(instances).toHaveLength(1);
    expect(fake.requests.filter((r) => allText(r.body).includes('ONLY-ONCE'))).toHaveLength(1);
    expect((await api.call('GET', `/v1/profile/${first.body.data.profileId}`)).body.data.usage.used).toBe(1);
  });

  it('Idempotency-Key is scoped to the key and the route, not to how the request spells them', async () => {
    const script = fake.script(onTurn('SPELLED-ANY-WAY', { blocks: [{ type: 'text', text: 'Once.' }], times: Infinity }));
    const body = JSON.stringify({ appId, channelId, userId: 'lou', input: 'SPELLED-ANY-WAY' });
    const send = async (path: string, authorization: string) => {
      const res = await fetch(`${t.url}${path}`, { method: 'POST', headers: { authorization, 'content-type': 'application/json', 'idempotency-key': 'run-lou-1' }, body });
      return { status: res.status, replayed: res.headers.get('idempotent-replayed'), body: (await res.json()) as { data: { instanceId: string } } };
    };
    const first = await send('/v1/response/run', `Bearer ${key}`);
    expect(first.status).toBe(200);
    for (const [path, authorization] of [
      ['/v1/response/run', `bearer ${key}`],
      ['/v1/response/run', `Bearer  ${key}`],
      ['/v1/response/%72un', `Bearer ${key}`],
      ['/v1/%72esponse/run', `BEARER\t${key}`],
    ]) {
      const again = await send(path, authorization);
      expect(again, `${path} ${JSON.stringify(authorization)}`).toEqual({ status: 200, replayed: 'true', body: first.body });
    }
    await api.events(first.body.data.instanceId);
    await script.request;
    const instances = (await api.call('GET', `/v1/instance/list?appId=${appId}&pageSize=100`)).body.data.items.filter((i: any) => i.userId === 'lou');
    expect(instances).toHaveLength(1);
    expect(fake.requests.filter((r) => allText(r.body).includes('SPELLED-ANY-WAY'))).toHaveLength(1);
  });

  it('poll and stop check their input and never show another organization\'s instance', async () => {
    fake.script(onTurn('TINY-TURN', { blocks: [{ type: 'text', text: 'Tiny.' }] }));
    const run = (await api.run({ appId, channelId, userId: 'mia', input: 'TINY-TURN' })).body.data;
    await api.events(run.instanceId);
    for (const q of ['after=-1', 'after=abc', 'after=1.5', 'timeoutMs=x', 'nope=1']) {
      expect((await api.call('GET', `/v1/response/poll/${run.instanceId}?${q}`)).status, q).toBe(400);
    }
    // Any integer after >= 0 is a cursor: past the last seq, an ended instance answers done.
    for (const after of ['2147483648', '99999999999']) {
      const past = await api.call('GET', `/v1/response/poll/${run.instanceId}?after=${after}&timeoutMs=0`);
      expect(past.body, after).toMatchObject({ success: true, data: { events: [], cursor: Number(after), done: true } });
    }
    const resumed = await readSse(`${t.url}/v1/response/stream/${run.instanceId}`, key, { lastEventId: '99999999999' });
    expect(resumed).toMatchObject({ status: 200, events: [], closedByServer: true });
    // timeoutMs is clamped, not refused.
    expect((await api.call('GET', `/v1/response/poll/${run.instanceId}?timeoutMs=999999999`)).status).toBe(200);
    expect((await api.call('GET', `/v1/response/poll/${run.instanceId}?timeoutMs=-5`)).status).toBe(200);
    const other = (await t.org()).key;
    expect((await t.call('GET', `/v1/response/poll/${run.instanceId}`, { key: other })).status).toBe(404);
    expect((await t.call('POST', '/v1/response/stop', { key: other, body: { instanceId: run.instanceId } })).status).toBe(404);
    expect((await readSse(`${t.url}/v1/response/stream/${run.instanceId}`, other)).status).toBe(404);
    expect((await api.stop('inst-unknown')).status).toBe(404);
    expect((await api.call('POST', '/v1/response/stop', {})).status).toBe(400);
  });
});

describe('resilience', () => {
  it('an instance whose worker stopped renewing its lease ends failed, and the session goes on', async () => {
    const stuck = fake.script(onTurn('HANG-HERE', { blocks: [{ type: 'text', text: ['hanging ', 'forever'] }], pauseAfter: 1 }));
    const run = (await api.run({ appId, channelId, userId: 'ned', input: 'HANG-HERE', sessionId: 'ned-1' })).body.data;
    await stuck.paused;
    // Another worker took it and died: this process's worker loses its lease renewals too.
    await t.ctx.db.updateTable('instances').set({ workerId: 'dead-worker', leaseUntil: new Date(Date.now() - 1000) }).where('id', '=', run.instanceId).execute();
    const events = await api.events(run.instanceId, 20_000);
    expect(events.at(-1)).toMatchObject({ type: 'result', done: true, data: { status: 'failed', error: expect.stringContaining('lease') } });
    expect(events.find((e) => e.type === 'error')!.data.code).toBe('worker_lost');
    expect(await api.instance(run.instanceId)).toMatchObject({ status: 'failed', completedAt: expect.any(String) });
    await stuck.disconnected; // the worker that lost the instance stopped its turn

    fake.script(onTurn('AFTER-CRASH', { blocks: [{ type: 'text', text: 'Back.' }] }));
    const next = (await api.run({ appId, channelId, userId: 'ned', input: 'AFTER-CRASH', sessionId: 'ned-1' })).body.data;
    const end = (await api.events(next.instanceId)).at(-1)!.data;
    expect(end, String(end.error)).toMatchObject({ status: 'completed', output: 'Back.' });
  });
});

describe('harnesslayer run', () => {
  function cli(args: string[]) {
    const child = spawn(process.execPath, [path.resolve('bin/harnesslayer.mjs'), 'run', ...args], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, HARNESSLAYER_URL: t.url, HARNESSLAYER_API_KEY: key },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const exit = once(child, 'exit').then(([code]) => ({ code: code as number | null, stdout, stderr }));
    return { child, exit, out: () => stdout };
  }

  it('streams the reply to the terminal; Ctrl-C stops the instance', async () => {
    fake.script(onTurn('CLI-HELLO', { blocks: [{ type: 'text', text: ['Hello ', 'from ', 'the ', 'agent.'] }] }));
    const ok = await cli(['--app', 'agent', '--channel', 'api', '--user', 'olga', '--session', 'olga-cli', 'CLI-HELLO', 'there']).exit;
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toBe('Hello from the agent.\n');
    expect(ok.stderr).toContain('session olga-cli');
    expect(fake.requests.some((r) => turnText(r.body).includes('CLI-HELLO there'))).toBe(true);

    const slow = fake.script(onTurn('CLI-SLOW', { blocks: [{ type: 'text', text: ['Partial ', 'then more'] }], pauseAfter: 1 }));
    const running = cli(['--app', appId, '--channel', channelId, '--user', 'olga', '--session', 'olga-cli', 'CLI-SLOW']);
    await slow.paused;
    await eventually(async () => running.out().includes('Partial '), 'the streamed text on stdout');
    running.child.kill('SIGINT');
    const stopped = await running.exit;
    expect(stopped.code).toBe(130);
    expect(stopped.stderr).toContain('[stopped]');
    const instanceId = /instance (inst-[A-Za-z0-9]+)/.exec(stopped.stderr)![1];
    expect(await api.instance(instanceId)).toMatchObject({ status: 'stopped', output: 'Partial ' });

    const refused = await cli(['--app', 'agent', '--channel', 'nope', '--user', 'olga', 'hi']).exit;
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('channel "nope" not found');
  });
});
