/**
 * The `openclaw` runtime: one turn of an OpenClaw agent on a supervised gateway (see
 * openclaw-gateway.ts), in the profile's workspace, mapped to our events. See README.md
 * here and ../shared/notes/runtimes.md §2.4–2.7 for the gateway's run protocol.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { TurnImage } from './claude.js';
import { ZERO_USAGE, type EventSink, type FinalStatus, type Usage } from './events.js';
import { untilAborted } from '../core/concurrency.js';
import type { GatewayClient } from './openclaw-client.js';
import { borrowWorkspace } from './openclaw-gateway.js';
import type { GatewayLease, GatewayPool } from './openclaw-pool.js';
import { OpenclawTurnMapper, textOf } from './openclaw-events.js';

export interface OpenclawTurnOptions {
  pool: GatewayPool;
  /** The trust domain whose gateway runs the turn (e.g. the app): turns of one key share it. */
  gatewayKey: string;
  /** The profile's workspace (AGENTS.md, SOUL.md, MEMORY.md...), materialized by the caller. */
  workspaceDir: string;
  /**
   * The conversation: one per Harnesslayer session and profile (`single`), or one shared by
   * the app's profiles (`group`). Each key is its own OpenClaw agent and transcript.
   */
  sessionKey: string;
  prompt: string;
  images?: TurnImage[];
  /** Stop: `chat.abort`; the turn ends `stopped`, keeping what was streamed. */
  abortSignal?: AbortSignal;
  /** Called once the gateway has taken the message (it is then in the conversation). */
  onSent?: () => void;
  /** The turn ends `failed` (code `timeout`) this long after the call, waits for a gateway included. */
  timeoutMs?: number;
  onEvent?: EventSink;
}

export interface OpenclawTurnResult {
  status: FinalStatus;
  /** The final assistant text; for a stopped or failed turn, the text streamed so far. */
  output: string;
  error: string | null;
  usage: Usage;
}

/** The fields of `chat.history` this runtime reads. */
interface History {
  messages?: {
    role?: string;
    content?: unknown;
    openclawAbort?: { aborted?: boolean };
    usage?: { input?: number; output?: number; cacheRead?: number; cacheWrite?: number; cost?: { total?: number } };
    __openclaw?: { runId?: string };
  }[];
}

/**
 * How long a stopped turn may take to end before it stops waiting for the gateway: under the
 * 10 s a stop has (CONTRACT §9), leaving time to record the result.
 */
const STOP_GRACE_MS = 8_000;
/** Sends of one turn's message when the gateway cancels the run before it starts (see below). */
const SEND_ATTEMPTS = 3;
const HISTORY_LIMIT = 50;

/** The OpenClaw agent of a conversation: a name the gateway accepts, unique per key. */
/**
 * The gateway takes a message that starts with `/` (or `!`) for one of its commands, and an
 * end user's message must reach the model as a message: it starts with a zero-width space
 * then. The gateway config (`commands`) leaves no one allowed to run commands, directives or
 * shortcuts, so those inside a message stay text; a standalone one would be refused instead.
 */
export function plainMessage(text: string): string {
  return /^\s*[/!]/.test(text) ? `\u200b${text}` : text;
}

export function agentIdFor(sessionKey: string): string {
  return `hl-${createHash('sha256').update(sessionKey).digest('hex').slice(0, 32)}`;
}

export async function runOpenclawTurn(opts: OpenclawTurnOptions): Promise<OpenclawTurnResult> {
  const stopped = (): OpenclawTurnResult => ({ status: 'stopped', output: '', error: null, usage: { ...ZERO_USAGE } });
  if (opts.abortSignal?.aborted) return stopped();
  // The turn's time runs from here: waiting for a gateway slot, a starting gateway or a new
  // agent counts, as the model's answer does.
  const deadline = opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined;
  const ends = [opts.abortSignal, deadline].filter((s) => s !== undefined);
  /** Ends the waits before the message is sent: a stop or the deadline. */
  const preparing = ends.length > 0 ? AbortSignal.any(ends) : undefined;
  /** The stop itself, as `untilAborted` rejects with it: not a failure of the gateway. */
  const isStop = (err: unknown) => opts.abortSignal?.aborted && err === opts.abortSignal.reason;
  const isDeadline = (err: unknown) => deadline?.aborted && err === deadline.reason;
  const emit: EventSink = opts.onEvent ?? (() => {});
  const fail = (message: string, code: string, output = '', usage: Usage = { ...ZERO_USAGE }): OpenclawTurnResult => {
    emit({ type: 'error', data: { message, code } });
    return { status: 'failed', output, error: message, usage };
  };
  const timedOut = (output = '', usage: Usage = { ...ZERO_USAGE }) => fail(`The turn timed out after ${opts.timeoutMs} ms.`, 'timeout', output, usage);

  let lease: GatewayLease;
  try {
    // Waiting for a gateway slot or a starting gateway can take tens of seconds; a stop ends it.
    lease = await opts.pool.acquire(opts.gatewayKey, preparing);
  } catch (err) {
    if (isStop(err)) return stopped();
    if (isDeadline(err)) return timedOut();
    return fail(`The OpenClaw gateway could not start: ${(err as Error).message}`, 'gateway_unavailable');
  }
  let client: GatewayClient | null = null;
  const unsubscribe: (() => void)[] = [];
  let giveBack: (() => Promise<void>) | null = null;
  try {
    const agentId = agentIdFor(opts.sessionKey);
    // Adding an agent reloads the gateway's config (seconds); a stop need not wait for it.
    const workspace = await untilAborted(lease.gateway.ensureAgent(agentId), preparing);
    giveBack = await borrowWorkspace(opts.workspaceDir, workspace);
    client = await lease.gateway.client();
    // The agent's own main session: its MEMORY.md is loaded there (private session).
    const sessionKey = `agent:${agentId}:main`;
    let runId = '';
    let turn: OpenclawTurnMapper | null = null;
    let emitted = 0; // events the current run produced
    unsubscribe.push(client.onEvent((event, payload) => turn?.handle(event, payload)));
    let gone: Error | null = null;
    unsubscribe.push(
      client.onClose((err) => {
        gone = err;
        turn?.interrupt();
      }),
    );

    const completedLast = lease.gateway.completedLast;
    const message = completedLast.has(agentId) ? opts.prompt : await untilAborted(carryStoppedReply(client, sessionKey, opts.prompt), preparing);
    completedLast.delete(agentId);
    if (opts.abortSignal?.aborted) return stopped();
    if (deadline?.aborted) return timedOut();

    let ending: 'stopped' | 'timeout' | null = null;
    let sent = false; // the current run exists on the gateway: chat.abort can reach it
    let graceTimer: NodeJS.Timeout | undefined;
    const sendAbort = () => {
      client!.call('chat.abort', { sessionKey, runId }).catch(() => turn?.interrupt());
      graceTimer = setTimeout(() => turn?.interrupt(), STOP_GRACE_MS);
    };
    const abort = (why: 'stopped' | 'timeout') => {
      if (ending || !turn || turn.state) return;
      ending = why;
      if (sent) sendAbort(); // else once chat.send is answered
    };
    const onAbort = () => abort('stopped');
    const onDeadline = () => abort('timeout');
    opts.abortSignal?.addEventListener('abort', onAbort, { once: true });
    deadline?.addEventListener('abort', onDeadline, { once: true });
    try {
      for (let attempt = 1; ; attempt++) {
        runId = randomUUID();
        emitted = 0;
        sent = false;
        turn = new OpenclawTurnMapper((event) => {
          emitted++;
          emit(event);
        }, runId);
        const ended = turn.ended;
        await client.call('chat.send', {
          sessionKey,
          message: plainMessage(message),
          idempotencyKey: runId, // the run's id is the idempotency key: its events carry it
          attachments: (opts.images ?? []).map((i) => ({ type: 'image', mimeType: i.mediaType, content: i.data })),
        });
        sent = true;
        opts.onSent?.();
        if (attempt === 1) emit({ type: 'status', data: { status: 'running' } });
        if (ending) sendAbort(); // stopped or timed out while chat.send was answered
        await ended;
        // Another conversation's new agent reloaded the gateway's config while this run was
        // being prepared, before the model was asked anything: the run is cancelled with this
        // error. Nothing happened yet, so the turn sends its message again. (The cancelled
        // run's user message stays in OpenClaw's transcript, so the model sees it twice.)
        const superseded = turn.state === 'error' && /superseded/i.test(turn.errorMessage) && emitted === 0;
        if (!superseded || ending || attempt >= SEND_ATTEMPTS) break;
      }
    } finally {
      clearTimeout(graceTimer);
      opts.abortSignal?.removeEventListener('abort', onAbort);
      deadline?.removeEventListener('abort', onDeadline);
    }

    if (turn.state === 'completed') {
      completedLast.add(agentId);
      const usage = (await runUsage(client, sessionKey, runId).catch(() => null)) ?? turn.streamUsage;
      return { status: 'completed', output: turn.finalText, error: null, usage };
    }
    if (ending === 'timeout') return timedOut(turn.lastText, turn.streamUsage);
    if (ending === 'stopped') return { status: 'stopped', output: turn.lastText, error: null, usage: turn.streamUsage };
    if (turn.state === 'error') return fail(turn.errorMessage, turn.errorCode, turn.lastText, turn.streamUsage);
    // Aborted without our stop: the gateway cancelled it (shutting down, session reset).
    const why = turn.state === 'aborted' ? 'it cancelled the run' : gone ? (gone as Error).message : 'the turn ended without a result';
    return fail(`The OpenClaw gateway stopped during the turn (${why}).`, 'gateway_error', turn.lastText, turn.streamUsage);
  } catch (err) {
    if (isStop(err)) return stopped(); // stopped while the agent was being added
    if (isDeadline(err)) return timedOut();
    return fail(`The OpenClaw gateway failed: ${(err as Error).message}`, 'gateway_error');
  } finally {
    for (const off of unsubscribe) off();
    lease.release();
    // The caller commits what the turn changed from its own directory.
    await giveBack?.();
  }
}

/**
 * OpenClaw keeps a stopped turn's partial reply in the transcript as a marked message
 * (`openclawAbort`) but leaves it out of the next model request. The next turn's prompt
 * carries it back, so the model sees what it had already said (CONTRACT §9: a stopped turn
 * stays in the conversation). The stopped user input is still in the transcript.
 */
async function carryStoppedReply(client: GatewayClient, sessionKey: string, prompt: string): Promise<string> {
  const history = await client.call<History>('chat.history', { sessionKey, limit: 4 }).catch(() => null);
  const last = history?.messages?.at(-1);
  if (last?.role !== 'assistant' || !last.openclawAbort?.aborted) return prompt;
  const partial = textOf(last.content).trim();
  if (!partial) return prompt;
  return `[Your previous reply was stopped before it finished. What you had said so far:]\n${partial}\n[End of the stopped reply.]\n\n${prompt}`;
}

/**
 * The turn's tokens and cost. `sessions.describe` (a few ms) carries the usage of the
 * session's last run; when that is not this run, the usage of each model response the run
 * recorded is summed from `chat.history` (tens of ms: it reads the transcript).
 */
async function runUsage(client: GatewayClient, sessionKey: string, runId: string): Promise<Usage | null> {
  const described = await client.call<{ session?: SessionTotals }>('sessions.describe', { key: sessionKey }).catch(() => null);
  const s = described?.session;
  if (s?.lastRunId === runId && typeof s.inputTokens === 'number') {
    return { inputTokens: s.inputTokens, outputTokens: num(s.outputTokens), costUsd: num(s.estimatedCostUsd) };
  }
  const history = await client.call<History>('chat.history', { sessionKey, limit: HISTORY_LIMIT });
  const rows = (history?.messages ?? []).filter((m) => m.role === 'assistant' && m.__openclaw?.runId === runId && m.usage);
  if (rows.length === 0) return null;
  const usage = { ...ZERO_USAGE };
  for (const { usage: u = {} } of rows) {
    usage.inputTokens += num(u.input) + num(u.cacheRead) + num(u.cacheWrite);
    usage.outputTokens += num(u.output);
    usage.costUsd += num(u.cost?.total);
  }
  return usage;
}

/** The fields of `sessions.describe`'s session this runtime reads. */
interface SessionTotals {
  lastRunId?: string;
  inputTokens?: number;
  outputTokens?: number;
  estimatedCostUsd?: number;
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}
