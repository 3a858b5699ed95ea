/**
 * The `claude` runtime: one turn of the real Claude Agent SDK (`query()`, which runs the
 * bundled Claude Code binary as a child process) in a working directory, mapped to our
 * events. See README.md here and ../shared/notes/runtimes.md §1 for the SDK's behaviour.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { query, type Options, type SDKMessage, type SDKResultMessage, type SDKUserMessage } from '@anthropic-ai/claude-agent-sdk';
import { spawnTiedToParent } from './claude-spawn.js';
import { savedUsage, totalsOf } from './claude-transcript.js';
import { ZERO_USAGE, type EventSink, type FinalStatus, type Usage } from './events.js';

export { exportTranscript, importTranscript, projectDirName } from './claude-transcript.js';

export interface TurnImage {
  mediaType: string;
  /** Base64, no data: prefix. */
  data: string;
}

export interface McpCredential {
  name: string;
  url: string;
  token: string;
}

export interface ClaudeTurnOptions {
  cwd: string;
  /** CLAUDE_CONFIG_DIR (and HOME) of the profile: config, transcripts, temp files. */
  configDir: string;
  prompt: string;
  images?: TurnImage[];
  resumeSessionId?: string;
  /** HTTP MCP servers; without a token when a proxy adds it (the run pipeline's mcp-proxy.ts). */
  mcpServers?: (Omit<McpCredential, 'token'> & { token?: string })[];
  /**
   * Tools allowed beyond edits in cwd (e.g. `Bash(npm test:*)`). Claude Code ignores the
   * allow rules of an untrusted workspace's .claude/settings.json, so the caller passes them.
   */
  allowedTools?: string[];
  anthropicBaseUrl?: string;
  anthropicApiKey: string;
  model?: string;
  /** Retries of failed model calls inside Claude Code (its default is 10, with backoff). */
  maxRetries?: number;
  /** Stop: the turn ends `stopped`, keeping what was streamed. */
  abortSignal?: AbortSignal;
  /** The turn ends `failed` (code `timeout`) after this long. */
  timeoutMs?: number;
  onEvent?: EventSink;
  /** Claude Code's diagnostics, for the run log. */
  onStderr?: (data: string) => void;
}

export interface ClaudeTurnResult {
  status: FinalStatus;
  /** The final assistant text; for a stopped or failed turn, the text streamed so far. */
  output: string;
  error: string | null;
  usage: Usage;
  /** Claude Code's session id: pass it as `resumeSessionId` next turn. */
  sdkSessionId: string | null;
}

/** How long an interrupt may take before the child process is killed. */
const STOP_GRACE_MS = 5_000;

export async function runClaudeTurn(opts: ClaudeTurnOptions): Promise<ClaudeTurnResult> {
  if (opts.abortSignal?.aborted) {
    return { status: 'stopped', output: '', error: null, usage: { ...ZERO_USAGE }, sdkSessionId: opts.resumeSessionId ?? null };
  }
  const emit: EventSink = opts.onEvent ?? (() => {});
  const baseline = opts.resumeSessionId ? await savedUsage(opts.configDir, opts.cwd, opts.resumeSessionId) : { ...ZERO_USAGE };
  const tmpDir = path.join(opts.configDir, 'tmp');
  await fs.mkdir(tmpDir, { recursive: true });

  // Streaming input (needed for image blocks). The input stays open until the turn's result:
  // closing it earlier would close stdin under the CLI while it still talks to the SDK.
  let endInput!: () => void;
  const inputEnded = new Promise<void>((resolve) => (endInput = resolve));
  async function* input(): AsyncGenerator<SDKUserMessage> {
    yield { type: 'user', parent_tool_use_id: null, message: { role: 'user', content: userContent(opts.prompt, opts.images) } };
    await inputEnded;
  }

  const abortController = new AbortController();
  const child = spawnTiedToParent(opts.onStderr);
  const options: Options = { ...sdkOptions(opts, tmpDir, abortController), ...(child.spawn ? { spawnClaudeCodeProcess: child.spawn } : { stderr: opts.onStderr }) };
  const q = query({ prompt: input(), options });
  const turn = new TurnMapper(emit);
  let ending: 'stopped' | 'timeout' | 'refused' | null = null;
  let graceTimer: NodeJS.Timeout | undefined;
  const interrupt = (why: 'stopped' | 'timeout' | 'refused') => {
    if (ending || turn.result) return;
    ending = why;
    // interrupt() ends the turn cleanly and keeps the transcript resumable; abort() kills.
    q.interrupt().catch(() => abortController.abort());
    graceTimer = setTimeout(() => abortController.abort(), STOP_GRACE_MS);
  };
  const onAbort = () => interrupt('stopped');
  opts.abortSignal?.addEventListener('abort', onAbort, { once: true });
  const timer = opts.timeoutMs ? setTimeout(() => interrupt('timeout'), opts.timeoutMs) : undefined;

  let crash: unknown = null;
  try {
    for await (const message of q) {
      turn.handle(message);
      if (message.type === 'result') endInput();
      // Claude Code retries a refused key with its backoff, for minutes: another try with the
      // same key is refused again.
      else if (turn.refusedStatus !== null) interrupt('refused');
    }
  } catch (err) {
    // After an error result the SDK also throws when the process exits: already handled.
    if (!turn.result) crash = err;
  } finally {
    clearTimeout(timer);
    clearTimeout(graceTimer);
    opts.abortSignal?.removeEventListener('abort', onAbort);
    endInput();
    q.close();
  }

  const result = turn.result;
  const usage = result ? usageSince(baseline, result) : turn.streamUsage;
  const base = { output: turn.lastText, usage, sdkSessionId: turn.sessionId ?? opts.resumeSessionId ?? null };
  if (result && result.subtype === 'success' && !result.is_error) {
    return { ...base, status: 'completed', output: result.result || turn.lastText, error: null };
  }
  if (ending === 'stopped') return { ...base, status: 'stopped', error: null };
  const [message, code] =
    ending === 'timeout'
      ? [`The turn timed out after ${opts.timeoutMs} ms.`, 'timeout']
      : ending === 'refused'
        ? [turn.explained(`The model request was refused (HTTP ${turn.refusedStatus}).`), 'authentication_failed']
        : result
        ? [turn.explained(resultError(result)), result.subtype === 'success' ? 'api_error' : result.subtype]
        : [`Claude Code failed: ${crashMessage(crash, child.stderr.tail())}`, 'runtime_error'];
  if (!turn.errorEmitted || ending === 'timeout' || ending === 'refused') emit({ type: 'error', data: { message, code } });
  return { ...base, status: 'failed', error: message };
}

/** The SDK's error, with the end of Claude Code's stderr when the SDK did not quote it. */
function crashMessage(crash: unknown, stderrTail: string): string {
  const message = crash instanceof Error ? crash.message : String(crash);
  return stderrTail && !message.includes('stderr:') ? `${message}. stderr: ${stderrTail}` : message;
}

function sdkOptions(opts: ClaudeTurnOptions, tmpDir: string, abortController: AbortController): Options {
  const mcpServers = Object.fromEntries(
    (opts.mcpServers ?? []).map((s) => [s.name, { type: 'http' as const, url: s.url, ...(s.token ? { headers: { Authorization: `Bearer ${s.token}` } } : {}) }]),
  );
  return {
    cwd: opts.cwd,
    env: childEnv(opts, tmpDir),
    abortController,
    resume: opts.resumeSessionId,
    model: opts.model,
    // Only the app's own settings (CLAUDE.md, .claude/), never the host's ~/.claude.
    settingSources: ['project'],
    systemPrompt: { type: 'preset', preset: 'claude_code' },
    // Edits inside cwd run without asking; anything else that would ask is denied at once
    // (nobody can answer a prompt). bypassPermissions is refused as root outside a sandbox.
    permissionMode: 'acceptEdits',
    permissionPrompts: 'none',
    // The app's credentials are its own MCP servers: their tools need no approval.
    allowedTools: [...(opts.allowedTools ?? []), ...Object.keys(mcpServers).map((name) => `mcp__${name}`)],
    mcpServers,
    // Headers over stdin, not argv, so other users of the machine cannot read tokens in `ps`.
    mcpServersDelivery: 'initialize',
    strictMcpConfig: true,
    includePartialMessages: true,
  };
}

/**
 * The child's whole environment (the SDK's `env` replaces, never merges): no server secret
 * (DATABASE_URL, HARNESSLAYER_SECRET, AWS keys...) reaches the agent's tools, only the model
 * key, and HOME/TMPDIR point into the profile's own config dir.
 */
function childEnv(opts: ClaudeTurnOptions, tmpDir: string): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: opts.configDir,
    CLAUDE_CONFIG_DIR: opts.configDir,
    TMPDIR: tmpDir,
    CLAUDE_CODE_TMPDIR: tmpDir,
    LANG: process.env.LANG ?? 'C.UTF-8',
    ANTHROPIC_API_KEY: opts.anthropicApiKey,
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_TELEMETRY: '1',
    DISABLE_ERROR_REPORTING: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_UPDATES: '1',
    CLAUDE_AGENT_SDK_CLIENT_APP: 'harnesslayer',
  };
  if (process.env.SHELL) env.SHELL = process.env.SHELL;
  if (opts.anthropicBaseUrl) env.ANTHROPIC_BASE_URL = opts.anthropicBaseUrl;
  if (opts.maxRetries !== undefined) env.CLAUDE_CODE_MAX_RETRIES = String(opts.maxRetries);
  return env;
}

type InputBlock =
  | { type: 'text'; text: string }
  | { type: 'image'; source: { type: 'base64'; media_type: string; data: string } };

function userContent(prompt: string, images: TurnImage[] = []): SDKUserMessage['message']['content'] {
  if (images.length === 0) return prompt;
  const blocks: InputBlock[] = prompt ? [{ type: 'text', text: prompt }] : [];
  for (const image of images) {
    blocks.push({ type: 'image', source: { type: 'base64', media_type: image.mediaType, data: image.data } });
  }
  // The media type is checked by the caller (CONTRACT: png, jpeg, gif, webp).
  return blocks as SDKUserMessage['message']['content'];
}

/** Turns the SDK's messages into our events, and keeps what the turn's result needs. */
class TurnMapper {
  sessionId: string | null = null;
  result: SDKResultMessage | null = null;
  /** Text of the latest assistant message that had text (the partial one after a stop). */
  lastText = '';
  errorEmitted = false;
  /** The model endpoint refused the key (an assistant message with `error: authentication_failed`). */
  keyRefused = false;
  /** The HTTP status of a refused key that Claude Code is about to retry (`system/api_retry`). */
  refusedStatus: number | null = null;
  streamUsage: Usage = { ...ZERO_USAGE };
  private started = false;
  private streamingId: string | null = null;
  private lastTextId: string | null = null;
  private readonly streamed = new Set<string>();

  /** Claude Code's words for a refused key name its own settings; say which of ours to check. */
  explained(message: string): string {
    return this.keyRefused ? `${message} (the model endpoint refused the key: check ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL) on the server that runs turns)` : message;
  }

  constructor(private readonly emit: EventSink) {}

  handle(m: SDKMessage): void {
    if ('session_id' in m && m.session_id) this.sessionId = m.session_id;
    // Subagents' inner messages stay inside their tool call.
    if ('parent_tool_use_id' in m && m.parent_tool_use_id) return;
    if (m.type === 'system' && m.subtype === 'init' && !this.started) {
      this.started = true;
      this.emit({ type: 'status', data: { status: 'running' } });
    } else if (m.type === 'system' && m.subtype === 'api_retry' && (m.error === 'authentication_failed' || m.error_status === 401 || m.error_status === 403)) {
      this.keyRefused = true;
      this.refusedStatus = m.error_status ?? 401;
    } else if (m.type === 'stream_event') {
      const ev = m.event;
      if (ev.type === 'message_start') {
        this.streamingId = ev.message.id;
        const u = ev.message.usage;
        this.streamUsage.inputTokens += u.input_tokens + (u.cache_read_input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0);
      } else if (ev.type === 'message_delta') {
        this.streamUsage.outputTokens += ev.usage.output_tokens;
      } else if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta' && this.streamingId) {
        this.streamed.add(this.streamingId);
        this.addText(this.streamingId, ev.delta.text);
      }
    } else if (m.type === 'assistant') {
      const text = m.message.content.flatMap((b) => (b.type === 'text' ? [b.text] : [])).join('');
      if (m.error) {
        // An API failure arrives as an assistant message holding the error text.
        this.errorEmitted = true;
        this.keyRefused ||= m.error === 'authentication_failed';
        this.emit({ type: 'error', data: { message: this.explained(text || m.error), code: m.error } });
        return;
      }
      // Without stream events (the CLI's non-streaming fallback) the text arrives whole.
      if (text && !this.streamed.has(m.message.id)) this.addText(m.message.id, text);
      if (text) this.emit({ type: 'message', data: { role: 'assistant', content: text } });
      for (const b of m.message.content) {
        if (b.type === 'tool_use') this.emit({ type: 'tool.call', data: { id: b.id, name: b.name, input: b.input } });
      }
    } else if (m.type === 'user' && Array.isArray(m.message.content)) {
      for (const b of m.message.content) {
        if (b.type !== 'tool_result') continue;
        this.emit({ type: 'tool.result', data: { toolCallId: b.tool_use_id, output: blockText(b.content), isError: b.is_error === true } });
      }
    } else if (m.type === 'result') {
      this.result = m;
    }
  }

  private addText(messageId: string, text: string): void {
    if (messageId !== this.lastTextId) {
      this.lastTextId = messageId;
      this.lastText = '';
    }
    this.lastText += text;
    this.emit({ type: 'text.delta', data: { text } });
  }
}

function blockText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b) => (b?.type === 'text' ? String(b.text) : `[${b?.type ?? 'block'}]`)).join('\n');
}

function resultError(result: SDKResultMessage): string {
  if (result.subtype === 'success') return result.result || 'The model request failed.';
  return result.errors.filter((e) => !e.startsWith('[ede_diagnostic]')).join('\n') || `Claude Code ended with ${result.subtype}.`;
}

function usageSince(baseline: Usage, result: SDKResultMessage): Usage {
  const total = totalsOf(result.total_cost_usd, result.modelUsage as unknown as Record<string, Record<string, number>>);
  return {
    inputTokens: Math.max(0, total.inputTokens - baseline.inputTokens),
    outputTokens: Math.max(0, total.outputTokens - baseline.outputTokens),
    costUsd: Math.max(0, total.costUsd - baseline.costUsd),
  };
}
