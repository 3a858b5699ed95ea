/**
 * The `openclaw` runtime against the real OpenClaw gateway (a Node 24 child process) and the
 * fake Messages API on loopback. The gateway is heavy (~1.2 GB, tens of seconds to start on
 * a loaded machine): one pool for the file, started in beforeAll. It uses no database, so it
 * runs in the PGlite pass only (test/responses/openclaw.test.ts runs the pipeline on both).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventData, EventType, RuntimeEvent } from '../../src/runtime/events.js';
import { runOpenclawTurn, type OpenclawTurnOptions } from '../../src/runtime/openclaw.js';
import { GatewayPool } from '../../src/runtime/openclaw-pool.js';
import { allText, startFakeAnthropic, type FakeAnthropic } from '../fakes/anthropic.js';
import { TEST_DB_KIND } from '../helpers/databases.js';

const APP = 'app-openclaw-test';
let fake: FakeAnthropic;
let pool: GatewayPool;
let root: string;
let workspaces = 0;

/** A workspace as the caller materializes it for one profile's turn. */
async function workspace(files: Record<string, string> = {}): Promise<string> {
  const dir = path.join(root, 'work', String(++workspaces));
  await fs.mkdir(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) await fs.writeFile(path.join(dir, name), content);
  return dir;
}

async function turn(opts: Partial<OpenclawTurnOptions> & { workspaceDir: string; sessionKey: string; prompt: string; watch?: (e: RuntimeEvent) => void }) {
  const events: RuntimeEvent[] = [];
  const { watch, ...rest } = opts;
  const onEvent = (e: RuntimeEvent) => {
    events.push(e);
    watch?.(e);
  };
  const result = await runOpenclawTurn({ pool, gatewayKey: APP, timeoutMs: 120_000, onEvent, ...rest });
  const of = <T extends EventType>(type: T) => events.filter((e) => e.type === type).map((e) => e.data as EventData[T]);
  return { result, events, of, streamed: of('text.delta').map((d) => d.text).join('') };
}

describe.runIf(TEST_DB_KIND === 'pglite')('openclaw runtime', { timeout: 240_000 }, () => {
  beforeAll(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'hl-openclaw-'));
    fake = await startFakeAnthropic();
    // Server secrets in this process's environment must not reach the gateway.
    process.env.HARNESSLAYER_TEST_SERVER_SECRET = 'server-secret-value';
    pool = new GatewayPool({
      dataDir: path.join(root, 'data'),
      anthropicBaseUrl: fake.url,
      anthropicApiKey: fake.apiKey,
      maxGateways: 1,
      startTimeoutMs: 240_000,
      // Short enough for the hung-gateway test. Long enough for a loaded machine: at 5 s, a
      // gateway restarted under the full suite's load missed two checks and was killed.
      healthIntervalMs: 15_000,
      // The supervisor's own lines (a health kill) say why a turn failed.
      onLog: (key, line) => {
        if (line.startsWith('[harnesslayer]')) console.log(`[openclaw ${key}] ${line}`);
      },
    });
    const started = Date.now();
    const lease = await pool.acquire(APP);
    lease.release();
    console.log(`openclaw gateway ready in ${Date.now() - started} ms`);
  }, 300_000);

  afterAll(async () => {
    delete process.env.HARNESSLAYER_TEST_SERVER_SECRET;
    await pool?.close();
    await fake?.close();
    if (root) await fs.rm(root, { recursive: true, force: true });
  });

  it('runs a text turn in the workspace and maps its events', async () => {
    const workspaceDir = await workspace({ 'AGENTS.md': 'Operating marker: ZEBRA-42\n', 'MEMORY.md': 'Memory marker: OKAPI-7\n' });
    fake.script({ blocks: [{ type: 'text', text: ['Hello ', 'there, ', 'friend.'] }] });

    const { result, events, of, streamed } = await turn({ workspaceDir, sessionKey: 'text', prompt: 'say hello' });

    expect(result).toEqual({ status: 'completed', output: 'Hello there, friend.', error: null, usage: { inputTokens: 100, outputTokens: 10, costUsd: 0 } });
    expect(events[0]).toEqual({ type: 'status', data: { status: 'running' } });
    expect(streamed).toBe('Hello there, friend.');
    expect(of('message')).toEqual([{ role: 'assistant', content: 'Hello there, friend.' }]);
    expect(of('error')).toEqual([]);
    const request = fake.requests.at(-1)!;
    expect(request.headers['x-api-key']).toBe(fake.apiKey);
    expect(allText(request.body)).toContain('say hello');
    // The workspace's files are the agent's: both are in its system prompt.
    const system = JSON.stringify(request.body.system);
    expect(system).toContain('ZEBRA-42');
    expect(system).toContain('OKAPI-7');
    // Tenancy: no shell, no other sessions, no gateway control among the offered tools.
    const tools = request.body.tools.map((t: { name: string }) => t.name);
    expect(tools).toEqual(expect.arrayContaining(['read', 'write', 'edit']));
    for (const denied of ['exec', 'process', 'sessions_history', 'sessions_list', 'gateway', 'agents_list', 'browser']) expect(tools).not.toContain(denied);
  });

  it("writes MEMORY.md with the gateway's file tool, and cannot read outside its workspace", async () => {
    const other = await workspace({ 'SECRET.md': 'other tenant: KIWI-99\n' });
    const workspaceDir = await workspace({ 'MEMORY.md': 'nothing yet\n' });
    fake.script({
      blocks: [
        { type: 'text', text: 'Noting it. ' },
        { type: 'tool_use', id: 'toolu_mem_1', name: 'write', input: { path: 'MEMORY.md', content: 'The code word is PELICAN.\n' } },
        { type: 'tool_use', id: 'toolu_peek_1', name: 'read', input: { path: path.join(other, 'SECRET.md') } },
      ],
    });
    fake.script({ blocks: [{ type: 'text', text: 'Saved.' }] });

    const { result, of, streamed } = await turn({ workspaceDir, sessionKey: 'memory', prompt: 'remember PELICAN' });

    expect(result).toMatchObject({ status: 'completed', output: 'Saved.', error: null });
    expect(await fs.readFile(path.join(workspaceDir, 'MEMORY.md'), 'utf8')).toBe('The code word is PELICAN.\n');
    expect(of('tool.call')).toEqual([
      { id: 'toolu_mem_1', name: 'write', input: { path: 'MEMORY.md', content: 'The code word is PELICAN.\n' } },
      { id: 'toolu_peek_1', name: 'read', input: { path: path.join(other, 'SECRET.md') } },
    ]);
    // The two calls run in parallel: their results come in either order.
    const results = new Map(of('tool.result').map((r) => [r.toolCallId, r]));
    expect(results.size).toBe(2);
    expect(results.get('toolu_mem_1')).toEqual({ toolCallId: 'toolu_mem_1', output: expect.stringContaining('Successfully wrote'), isError: false });
    expect(results.get('toolu_peek_1')).toEqual({ toolCallId: 'toolu_peek_1', output: expect.stringContaining('escapes sandbox root'), isError: true });
    expect(results.get('toolu_peek_1')!.output).not.toContain('KIWI-99');
    expect(allText(fake.requests.at(-1)!.body)).not.toContain('KIWI-99');
    expect(streamed).toBe('Noting it.\n\nSaved.');
    expect(of('message')).toEqual([
      { role: 'assistant', content: 'Noting it.' },
      { role: 'assistant', content: 'Saved.' },
    ]);
    expect(result.usage).toEqual({ inputTokens: 200, outputTokens: 40, costUsd: 0 });
  });

  it('continues a session: the second model request holds the first turn; another session starts empty', async () => {
    const workspaceDir = await workspace();
    fake.script({ blocks: [{ type: 'text', text: 'Noted, the code word is HERON.' }] });
    const one = await turn({ workspaceDir, sessionKey: 'continuity', prompt: 'remember the code word HERON' });
    expect(one.result.status).toBe('completed');

    // Each turn materializes the profile's files afresh: the session follows the new dir.
    const next = await workspace();
    fake.script({ blocks: [{ type: 'text', text: 'It was HERON.' }] });
    const two = await turn({ workspaceDir: next, sessionKey: 'continuity', prompt: 'what was the code word?' });
    expect(two.result).toMatchObject({ status: 'completed', output: 'It was HERON.' });
    const messages = fake.requests.at(-1)!.body.messages;
    expect(allText({ messages })).toContain('remember the code word HERON');
    expect(messages.some((m: { role: string; content: unknown }) => m.role === 'assistant' && JSON.stringify(m.content).includes('Noted, the code word is HERON.'))).toBe(true);

    fake.script({ blocks: [{ type: 'text', text: 'Which code word?' }] });
    const fresh = await turn({ workspaceDir: next, sessionKey: 'someone-else', prompt: 'what was the code word?' });
    expect(fresh.result.status).toBe('completed');
    expect(allText(fake.requests.at(-1)!.body)).not.toContain('HERON');
  });

  it('stops mid-stream, keeps the partial text, and the next turn sees the stopped input and partial text', async () => {
    const workspaceDir = await workspace();
    const slow = fake.script({ blocks: [{ type: 'text', text: ['Partial ', 'answer ', 'NEVER-STREAMED'] }], pauseAfter: 2 });
    const stop = new AbortController();
    // Stop once the model holds its stream and the gateway has passed both words on to us:
    // the fake having sent them is not enough, the gateway may still be relaying them.
    let seen = '';
    let relayed!: () => void;
    const bothWords = new Promise<void>((resolve) => (relayed = resolve));
    const watch = (e: RuntimeEvent) => {
      if (e.type !== 'text.delta') return;
      seen += (e.data as EventData['text.delta']).text;
      if (seen.includes('answer')) relayed();
    };
    void Promise.all([slow.paused, bothWords]).then(() => stop.abort());

    const one = await turn({ workspaceDir, sessionKey: 'stop', prompt: 'tell me slowly', abortSignal: stop.signal, watch });

    expect(one.result).toMatchObject({ status: 'stopped', output: 'Partial answer', error: null });
    expect(one.streamed).toBe('Partial answer');
    expect(one.of('error')).toEqual([]);
    await slow.disconnected; // the model stream was closed, not left running

    fake.script({ blocks: [{ type: 'text', text: 'Continuing.' }] });
    const two = await turn({ workspaceDir, sessionKey: 'stop', prompt: 'go on' });
    expect(two.result).toMatchObject({ status: 'completed', output: 'Continuing.' });
    const text = allText(fake.requests.at(-1)!.body);
    expect(text).toContain('tell me slowly');
    expect(text).toContain('Partial answer');
    expect(text).toContain('go on');
    expect(text).not.toContain('NEVER-STREAMED');
  });

  it('gives the gateway a scrubbed environment', async () => {
    const [gateway] = pool.running;
    const environ = (await fs.readFile(`/proc/${gateway.pid}/environ`, 'utf8')).split('\0');
    expect(environ).toContain(`ANTHROPIC_API_KEY=${fake.apiKey}`);
    expect(environ).toContain('OPENCLAW_SKIP_CHANNELS=1');
    expect(environ.join('\n')).not.toContain('server-secret-value');
    expect(environ.filter((e) => /^(HARNESSLAYER_|DATABASE_URL|AWS_)/.test(e))).toEqual([]);
  });

  it('fails a turn cleanly when the gateway dies mid-run, and the next turn starts a new gateway', async () => {
    const workspaceDir = await workspace();
    const [before] = pool.running;
    const slow = fake.script({ blocks: [{ type: 'text', text: ['Half ', 'an ', 'answer'] }], pauseAfter: 1 });
    void slow.paused.then(() => process.kill(-before.pid!, 'SIGKILL'));

    const one = await turn({ workspaceDir, sessionKey: 'crash', prompt: 'start something' });

    expect(one.result.status).toBe('failed');
    expect(one.result.error).toMatch(/gateway stopped during the turn/);
    expect(one.of('error')).toEqual([{ message: one.result.error, code: 'gateway_error' }]);
    await new Promise<void>((resolve) => before.onExit(resolve));
    expect(before.alive).toBe(false);

    fake.script({ blocks: [{ type: 'text', text: 'Back again.' }] });
    const two = await turn({ workspaceDir, sessionKey: 'crash', prompt: 'are you there?' });
    expect(two.result, String(two.result.error)).toMatchObject({ status: 'completed', output: 'Back again.' });
    const [after] = pool.running;
    expect(after.pid).not.toBe(before.pid);
    // The transcript outlived the process: the new gateway's request holds the first input.
    expect(allText(fake.requests.at(-1)!.body)).toContain('start something');
  }, 300_000);

  it('kills a gateway that stops answering its health checks; the next turn starts a new one', async () => {
    const [hung] = pool.running;
    process.kill(-hung.pid!, 'SIGSTOP');
    await new Promise<void>((resolve) => hung.onExit(resolve));
    expect(hung.alive).toBe(false);

    fake.script({ blocks: [{ type: 'text', text: 'Fresh start.' }] });
    const { result } = await turn({ workspaceDir: await workspace(), sessionKey: 'after-hang', prompt: 'hello again' });
    expect(result, String(result.error)).toMatchObject({ status: 'completed', output: 'Fresh start.' });
    expect(pool.running[0].pid).not.toBe(hung.pid);
  }, 300_000);

  it('fails a turn that runs past its timeout', async () => {
    fake.script({ match: (r) => allText(r.body).includes('never finishes'), blocks: [{ type: 'text', text: ['stuck ', 'forever'] }], pauseAfter: 1 });
    const { result, of } = await turn({ workspaceDir: await workspace(), sessionKey: 'timeout', prompt: 'this never finishes', timeoutMs: 3_000 });
    expect(result).toMatchObject({ status: 'failed', error: 'The turn timed out after 3000 ms.' });
    expect(of('error')).toEqual([{ message: result.error, code: 'timeout' }]);
  });

  it('counts the wait for a gateway slot in the timeout: a turn that waits too long fails, and starts no gateway', async () => {
    const held = await pool.acquire(APP); // the pool's one slot, busy: another key's turn must wait
    try {
      const { result, events } = await turn({ workspaceDir: await workspace(), sessionKey: 'waits', gatewayKey: 'app-other', prompt: 'hi', timeoutMs: 500 });
      expect(result).toEqual({ status: 'failed', output: '', error: 'The turn timed out after 500 ms.', usage: { inputTokens: 0, outputTokens: 0, costUsd: 0 } });
      expect(events).toEqual([{ type: 'error', data: { message: result.error, code: 'timeout' } }]);
    } finally {
      held.release();
    }
    expect(pool.running.map((g) => g.key)).toEqual([APP]);
  });

  it('ends a stopped turn that waits for a gateway slot at once, and starts no gateway for it', async () => {
    const held = await pool.acquire(APP); // the pool's one slot, busy: another key's turn must wait
    try {
      const stop = new AbortController();
      const waiting = turn({ workspaceDir: await workspace(), sessionKey: 'queued', gatewayKey: 'app-other', prompt: 'hi', abortSignal: stop.signal });
      stop.abort();
      const { result, events } = await waiting;
      expect(result).toEqual({ status: 'stopped', output: '', error: null, usage: { inputTokens: 0, outputTokens: 0, costUsd: 0 } });
      expect(events).toEqual([]);
    } finally {
      held.release();
    }
    expect(pool.running.map((g) => g.key)).toEqual([APP]);
  });

  it('ends a stopped turn whose gateway is still starting at once; the gateway comes up for the next turn', async () => {
    const own = new GatewayPool({ ...pool.opts, dataDir: path.join(root, 'data-starting'), maxGateways: 1 });
    try {
      const stop = new AbortController();
      const starting = turn({ pool: own, workspaceDir: await workspace(), sessionKey: 'starting', prompt: 'hi', abortSignal: stop.signal });
      stop.abort();
      const { result, events } = await starting;
      expect(result.status).toBe('stopped');
      expect(events).toEqual([]);
      expect(own.running).toEqual([]); // it ended before its gateway was up

      fake.script({ blocks: [{ type: 'text', text: 'Up now.' }] });
      const next = await turn({ pool: own, workspaceDir: await workspace(), sessionKey: 'starting', prompt: 'hello' });
      expect(next.result, String(next.result.error)).toMatchObject({ status: 'completed', output: 'Up now.' });
      expect(own.running).toHaveLength(1);
    } finally {
      await own.close();
    }
  }, 300_000);

  it('does not start a turn that was stopped before it began', async () => {
    const stop = new AbortController();
    stop.abort();
    const count = fake.requests.length;
    const { result, events } = await turn({ workspaceDir: await workspace(), sessionKey: 'never', prompt: 'hi', abortSignal: stop.signal });
    expect(result).toEqual({ status: 'stopped', output: '', error: null, usage: { inputTokens: 0, outputTokens: 0, costUsd: 0 } });
    expect(events).toEqual([]);
    expect(fake.requests).toHaveLength(count);
  });
});
