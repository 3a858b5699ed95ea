/**
 * The `claude` runtime against the real SDK and its bundled Claude Code, talking to a fake
 * Messages API (and a fake MCP server) on loopback. No database.
 */
import { readdirSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { exportTranscript, importTranscript, runClaudeTurn, type ClaudeTurnOptions } from '../../src/runtime/claude.js';
import type { EventData, EventType, RuntimeEvent } from '../../src/runtime/events.js';
import { allText, startFakeAnthropic, type FakeAnthropic } from '../fakes/anthropic.js';
import { startFakeMcp } from '../fakes/mcp.js';

const PNG_1PX = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';

let fake: FakeAnthropic;
const roots: string[] = [];

/** A fresh work dir and config dir, as a worker would materialize for one profile. */
async function profileDirs(): Promise<{ cwd: string; configDir: string }> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'hl-claude-'));
  roots.push(root);
  const cwd = path.join(root, 'work');
  const configDir = path.join(root, 'config');
  await fs.mkdir(cwd);
  await fs.mkdir(configDir);
  return { cwd, configDir };
}

async function turn(opts: Partial<ClaudeTurnOptions> & { cwd: string; configDir: string; prompt: string }) {
  const events: RuntimeEvent[] = [];
  const result = await runClaudeTurn({
    anthropicBaseUrl: fake.url,
    anthropicApiKey: fake.apiKey,
    model: 'claude-sonnet-4-5',
    maxRetries: 0,
    timeoutMs: 60_000,
    ...opts,
    onEvent: (e) => {
      events.push(e);
      opts.onEvent?.(e);
    },
  });
  const of = <T extends EventType>(type: T) => events.filter((e) => e.type === type).map((e) => e.data as EventData[T]);
  return { result, events, of, streamed: of('text.delta').map((d) => d.text).join('') };
}

/** Moves a session to a new config dir and work dir, as a turn on another worker would. */
async function moveSession(from: { cwd: string; configDir: string }, sessionId: string) {
  const jsonl = await exportTranscript(from.configDir, from.cwd, sessionId);
  expect(jsonl).toContain(sessionId);
  const to = await profileDirs();
  await importTranscript(to.configDir, to.cwd, sessionId, jsonl!);
  return to;
}

/** The processes whose parent is `pid`, with their command lines (from /proc; Linux). */
function childrenOf(pid: number): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // "pid (comm) state ppid ...": the comm may hold spaces, so split after its ')'.
      if (Number(readFileSync(`/proc/${name}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]) !== pid) continue;
      out.push({ pid: Number(name), cmdline: readFileSync(`/proc/${name}/cmdline`, 'utf8') });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

beforeEach(async () => {
  fake = await startFakeAnthropic();
});
afterEach(async () => {
  await fake.close();
});
afterAll(async () => {
  for (const root of roots) await fs.rm(root, { recursive: true, force: true });
});

describe('claude runtime', () => {
  it('runs a Write tool turn in cwd and maps its events', async () => {
    const dirs = await profileDirs();
    await fs.writeFile(path.join(dirs.cwd, 'CLAUDE.md'), 'Project marker: ZEBRA-42\n');
    const file = path.join(dirs.cwd, 'notes', 'hello.txt');
    fake.script({
      blocks: [
        { type: 'text', text: 'Writing the file. ' },
        { type: 'tool_use', id: 'toolu_write_1', name: 'Write', input: { file_path: file, content: 'hello from the agent\n' } },
      ],
    });
    fake.script({ blocks: [{ type: 'text', text: 'The file is written.' }] });

    const { result, events, of, streamed } = await turn({ ...dirs, prompt: 'write me a file' });

    expect(result).toMatchObject({ status: 'completed', output: 'The file is written.', error: null });
    expect(result.sdkSessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(await fs.readFile(file, 'utf8')).toBe('hello from the agent\n');
    expect(events[0]).toEqual({ type: 'status', data: { status: 'running' } });
    expect(of('tool.call')).toEqual([{ id: 'toolu_write_1', name: 'Write', input: { file_path: file, content: 'hello from the agent\n' } }]);
    expect(of('tool.result')).toEqual([{ toolCallId: 'toolu_write_1', output: expect.stringContaining('File created'), isError: false }]);
    expect(streamed).toBe('Writing the file. The file is written.');
    expect(of('message')).toEqual([
      { role: 'assistant', content: 'Writing the file. ' },
      { role: 'assistant', content: 'The file is written.' },
    ]);
    expect(of('error')).toEqual([]);
    // Two model calls of 100 input tokens each (the fake's usage); the price is Claude Code's.
    expect(result.usage.inputTokens).toBe(200);
    expect(result.usage.outputTokens).toBe(30);
    expect(result.usage.costUsd).toBeGreaterThan(0);

    const first = fake.requests[0];
    expect(first.headers['x-api-key']).toBe(fake.apiKey);
    expect(allText(first.body)).toContain('ZEBRA-42'); // settingSources: ['project']
    expect(allText(first.body)).toContain('write me a file');
    // The tool result went back to the model.
    expect(JSON.stringify(fake.requests[1].body.messages.at(-1))).toContain('toolu_write_1');
    // No title generation or other side traffic.
    expect(fake.auxiliary).toEqual([]);
    expect(fake.requests).toHaveLength(2);
  });

  it('resumes a session after moving its transcript to a new config dir; a new session starts empty', async () => {
    const dirs = await profileDirs();
    fake.script({ blocks: [{ type: 'text', text: 'Noted, your code word is PELICAN.' }] });
    const one = await turn({ ...dirs, prompt: 'remember the code word PELICAN' });
    expect(one.result.status).toBe('completed');

    const moved = await moveSession(dirs, one.result.sdkSessionId!);
    fake.script({ blocks: [{ type: 'text', text: 'It was PELICAN.' }] });
    const two = await turn({ ...moved, prompt: 'what was the code word?', resumeSessionId: one.result.sdkSessionId! });

    expect(two.result).toMatchObject({ status: 'completed', output: 'It was PELICAN.', sdkSessionId: one.result.sdkSessionId });
    const history = fake.requests[1].body.messages;
    expect(allText({ messages: history })).toContain('remember the code word PELICAN');
    expect(history.some((m: any) => m.role === 'assistant' && JSON.stringify(m.content).includes('Noted, your code word is PELICAN.'))).toBe(true);
    expect(allText(fake.requests[1].body)).toContain('what was the code word?');
    // Usage is the turn's own, not the session's running total.
    expect(two.result.usage.inputTokens).toBe(100);

    fake.script({ blocks: [{ type: 'text', text: 'Which code word?' }] });
    const fresh = await turn({ ...moved, prompt: 'what was the code word?' });
    expect(fresh.result.status).toBe('completed');
    expect(fresh.result.sdkSessionId).not.toBe(one.result.sdkSessionId);
    expect(allText(fake.requests[2].body)).not.toContain('PELICAN');
  });

  it('stops during a slow stream, keeps the partial text, and the resumed turn sees it', async () => {
    const dirs = await profileDirs();
    const slow = fake.script({ blocks: [{ type: 'text', text: ['Partial ', 'answer ', 'NEVER-STREAMED'] }], pauseAfter: 2 });
    const stop = new AbortController();
    // Stop once the runtime has seen the two chunks the model sent before pausing (waiting on
    // the fake's pause alone races the deltas still in flight to the runtime).
    let seen = '';
    const onEvent = (e: RuntimeEvent) => {
      if (e.type !== 'text.delta') return;
      seen += (e.data as EventData['text.delta']).text;
      if (seen === 'Partial answer ') stop.abort();
    };

    const one = await turn({ ...dirs, prompt: 'tell me slowly', abortSignal: stop.signal, onEvent });
    await slow.paused;

    expect(one.result).toMatchObject({ status: 'stopped', output: 'Partial answer ', error: null });
    expect(one.streamed).toBe('Partial answer ');
    expect(one.of('error')).toEqual([]);
    await slow.disconnected; // the model stream was closed, not left running

    const moved = await moveSession(dirs, one.result.sdkSessionId!);
    fake.script({ blocks: [{ type: 'text', text: 'Continuing.' }] });
    const two = await turn({ ...moved, prompt: 'go on', resumeSessionId: one.result.sdkSessionId! });

    expect(two.result).toMatchObject({ status: 'completed', output: 'Continuing.' });
    const text = allText(fake.requests[1].body);
    expect(text).toContain('tell me slowly');
    expect(text).toContain('Partial answer');
    expect(text).not.toContain('NEVER-STREAMED');
  });

  it('passes images as image blocks', async () => {
    const dirs = await profileDirs();
    fake.script({ blocks: [{ type: 'text', text: 'A single pixel.' }] });
    const { result } = await turn({ ...dirs, prompt: 'what is this?', images: [{ mediaType: 'image/png', data: PNG_1PX }] });

    expect(result.status).toBe('completed');
    const blocks = fake.requests[0].body.messages.flatMap((m: any) => (Array.isArray(m.content) ? m.content : []));
    expect(blocks).toContainEqual({ type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG_1PX } });
    expect(allText(fake.requests[0].body)).toContain('what is this?');
  });

  it('gives MCP servers their bearer token, and a stop during a tool call leaves no dangling call', async () => {
    let release!: (text: string) => void;
    const stop = new AbortController();
    const mcp = await startFakeMcp('mcp-token-123', [
      { name: 'echo', description: 'Echoes its text.', run: (a) => `echo: ${String(a.text)}` },
      {
        name: 'wait',
        description: 'Waits until released.',
        run: () => {
          stop.abort(); // the tool is running now: stop the turn
          return new Promise<string>((resolve) => (release = resolve));
        },
      },
    ]);
    try {
      const dirs = await profileDirs();
      const mcpServers = [{ name: 'crm', url: mcp.url, token: 'mcp-token-123' }];
      fake.script({ blocks: [{ type: 'tool_use', id: 'toolu_echo', name: 'mcp__crm__echo', input: { text: 'hi' } }] });
      fake.script({ blocks: [{ type: 'text', text: 'Echoed.' }] });
      const one = await turn({ ...dirs, prompt: 'use the crm', mcpServers });

      expect(one.result.status).toBe('completed');
      expect(one.of('tool.result')).toEqual([{ toolCallId: 'toolu_echo', output: 'echo: hi', isError: false }]);
      expect(mcp.requests.map((r) => r.rpcMethod)).toEqual(expect.arrayContaining(['initialize', 'tools/list', 'tools/call']));
      expect(mcp.requests.every((r) => r.headers.authorization === 'Bearer mcp-token-123')).toBe(true);

      // Stop while the tool runs: the next turn's history closes the call with an error result.
      fake.script({ blocks: [{ type: 'tool_use', id: 'toolu_wait', name: 'mcp__crm__wait', input: {} }] });
      const two = await turn({ ...dirs, prompt: 'wait for it', mcpServers, abortSignal: stop.signal, resumeSessionId: one.result.sdkSessionId! });
      release('too late');
      expect(two.result.status).toBe('stopped');
      expect(two.of('tool.call').map((c) => c.id)).toEqual(['toolu_wait']);

      fake.script({ blocks: [{ type: 'text', text: 'OK.' }] });
      const three = await turn({ ...dirs, prompt: 'never mind', resumeSessionId: one.result.sdkSessionId! });
      expect(three.result.status).toBe('completed');
      const results = fake.requests.at(-1)!.body.messages.flatMap((m: any) =>
        Array.isArray(m.content) ? m.content.filter((b: any) => b.type === 'tool_result' && b.tool_use_id === 'toolu_wait') : [],
      );
      expect(results).toHaveLength(1);
      expect(results[0].is_error).toBe(true);
    } finally {
      await mcp.close();
    }
  });

  it('retries a model 500, and fails with an error event when the model keeps failing', async () => {
    const dirs = await profileDirs();
    fake.script({ error: { status: 500, type: 'api_error', message: 'Internal server error' } });
    fake.script({ blocks: [{ type: 'text', text: 'Recovered.' }] });
    const ok = await turn({ ...dirs, prompt: 'hi', maxRetries: 1 });
    expect(ok.result).toMatchObject({ status: 'completed', output: 'Recovered.' });
    expect(fake.requests).toHaveLength(2);

    fake.script({ error: { status: 529, type: 'overloaded_error', message: 'Overloaded' }, times: Infinity });
    const failed = await turn({ ...dirs, prompt: 'hi again', maxRetries: 1 });
    expect(failed.result.status).toBe('failed');
    expect(failed.result.error).toContain('529');
    expect(failed.of('error')).toEqual([{ message: failed.result.error, code: expect.any(String) }]);
    expect(fake.requests).toHaveLength(4);
  });

  it("a key the model endpoint refuses fails the turn, saying which of the server's settings to check", async () => {
    const dirs = await profileDirs();
    // With Claude Code's own retries on, as on a server (it would retry the refusal for minutes).
    const refusedBefore = fake.other.length;
    const { result, of } = await turn({ ...dirs, prompt: 'hi', anthropicApiKey: 'sk-wrong-key', maxRetries: undefined });
    expect(fake.other.length - refusedBefore).toBeLessThanOrEqual(2);
    expect(result.status).toBe('failed');
    expect(result.error).toContain('check ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL) on the server');
    expect(of('error').at(-1)!.message).toContain('check ANTHROPIC_API_KEY');
  });

  it('falls back to a non-streaming request when a stream breaks', async () => {
    const dirs = await profileDirs();
    fake.script({ blocks: [{ type: 'text', text: ['half ', 'way'] }], streamErrorAfter: 1 });
    fake.script({ blocks: [{ type: 'text', text: 'Whole answer.' }] });
    const { result, of } = await turn({ ...dirs, prompt: 'hi' });
    expect(result).toMatchObject({ status: 'completed', output: 'Whole answer.' });
    expect(fake.requests.map((r) => r.body.stream)).toEqual([true, false]);
    expect(of('message')).toEqual([{ role: 'assistant', content: 'Whole answer.' }]);
  });

  it('fails a turn whose Claude Code dies mid-stream, keeping what it had streamed', async () => {
    const dirs = await profileDirs();
    const slow = fake.script({ blocks: [{ type: 'text', text: ['Half ', 'NEVER-STREAMED'] }], pauseAfter: 1 });
    let killed: number | undefined;
    const onEvent = (e: RuntimeEvent) => {
      if (e.type !== 'text.delta' || killed !== undefined) return;
      // Claude Code is this process's child (started through setpriv, which execs in place).
      killed = childrenOf(process.pid).find((c) => c.cmdline.includes('claude-agent-sdk'))?.pid;
      if (killed) process.kill(killed, 'SIGKILL');
    };
    const { result, of, streamed } = await turn({ ...dirs, prompt: 'tell me slowly', onEvent });
    await slow.paused;
    expect(killed).toBeGreaterThan(0);
    expect(streamed).toBe('Half ');
    expect(result).toMatchObject({ status: 'failed', output: 'Half ' });
    expect(result.error).toMatch(/^Claude Code failed: .*SIGKILL/);
    expect(of('error')).toEqual([{ message: result.error, code: 'runtime_error' }]);
  });

  it('fails a turn that runs past its timeout', async () => {
    const dirs = await profileDirs();
    fake.script({ blocks: [{ type: 'text', text: ['stuck ', 'forever'] }], pauseAfter: 1 });
    const { result, of } = await turn({ ...dirs, prompt: 'hi', timeoutMs: 1_500 });
    expect(result).toMatchObject({ status: 'failed', error: 'The turn timed out after 1500 ms.' });
    expect(of('error')).toEqual([{ message: result.error, code: 'timeout' }]);
  });

  it('gives the agent a scrubbed environment', async () => {
    const dirs = await profileDirs();
    const saved = { ...process.env };
    process.env.DATABASE_URL = 'postgres://server-secret@db/prod';
    process.env.HARNESSLAYER_SECRET = 'server-secret-value';
    try {
      fake.script({ blocks: [{ type: 'tool_use', id: 'toolu_env', name: 'Bash', input: { command: 'printenv', description: 'env' } }] });
      fake.script({ blocks: [{ type: 'text', text: 'Done.' }] });
      const { result, of } = await turn({ ...dirs, prompt: 'show env', allowedTools: ['Bash(printenv)'] });
      expect(result.status).toBe('completed');
      const [env] = of('tool.result');
      expect(env.isError).toBe(false);
      expect(env.output).toContain(`CLAUDE_CONFIG_DIR=${dirs.configDir}\n`);
      expect(env.output).toContain(`HOME=${dirs.configDir}\n`);
      expect(env.output).not.toContain('server-secret');
      expect(env.output).not.toMatch(/^(DATABASE_URL|HARNESSLAYER_)/m);
    } finally {
      process.env = saved;
    }
  });

  it('fails a turn that resumes an unknown session, saying so; what Claude Code writes to stderr reaches onStderr', async () => {
    const dirs = await profileDirs();
    const stderr: string[] = [];
    const { result } = await turn({ ...dirs, prompt: 'hi', resumeSessionId: '00000000-0000-4000-8000-000000000000', onStderr: (d) => stderr.push(d) });
    expect(result).toMatchObject({ status: 'failed', error: 'No conversation found with session ID: 00000000-0000-4000-8000-000000000000' });
    expect(stderr.join('')).toContain('No conversation found with session ID: 00000000-0000-4000-8000-000000000000');
  });

  it('does not start a turn that was stopped before it began', async () => {
    const dirs = await profileDirs();
    const stop = new AbortController();
    stop.abort();
    const { result, events } = await turn({ ...dirs, prompt: 'hi', abortSignal: stop.signal });
    expect(result).toMatchObject({ status: 'stopped', output: '', error: null });
    expect(events).toEqual([]);
    expect(fake.requests).toEqual([]);
  });

  it('exports nothing for an unknown session and rejects ids that are not plain names', async () => {
    const dirs = await profileDirs();
    expect(await exportTranscript(dirs.configDir, dirs.cwd, '00000000-0000-4000-8000-000000000000')).toBeNull();
    await expect(importTranscript(dirs.configDir, dirs.cwd, '../escape', '{}')).rejects.toThrow(/Invalid/);
  });
});
