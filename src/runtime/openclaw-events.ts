/**
 * Maps one OpenClaw run's gateway events to our events (CONTRACT §9), and keeps what the
 * turn's result needs. The connection sees every run of the gateway: only events carrying
 * this run's id count.
 *
 * | gateway event | our event |
 * |---|---|
 * | `chat` `delta` (`deltaText`) | `text.delta` |
 * | `agent` `item` of kind `preamble` (text before a tool call, cumulative `progressText`) | `text.delta` (the new part), `message` when it ends |
 * | `agent` `tool` `start` (`toolCallId`, `name`, `args`) | `tool.call {id, name, input}` |
 * | `agent` `tool` `result` (`result.content`, `isError`) | `tool.result {toolCallId, output, isError}` |
 * | `chat` `final` | `message` (the final text); the turn completed |
 * | `chat` `aborted` | the turn stopped (the caller's stop) |
 * | `chat` `error` (`errorMessage`, `errorKind`) | `error`; the turn failed |
 */
import { ZERO_USAGE, type EventSink, type Usage } from './events.js';

export type RunState = 'completed' | 'aborted' | 'error';

/** The fields of gateway events this mapper reads (everything else is ignored). */
interface RunEvent {
  runId?: string;
  state?: string;
  deltaText?: string;
  replace?: boolean;
  message?: { content?: unknown };
  errorMessage?: string;
  errorKind?: string;
  stream?: string;
  data?: AgentData;
}

interface AgentData {
  kind?: string;
  phase?: string;
  itemId?: string;
  progressText?: string;
  toolCallId?: string;
  name?: string;
  args?: unknown;
  result?: unknown;
  isError?: boolean;
  outputTokens?: number;
}

interface Block {
  type?: string;
  text?: string;
}

export class OpenclawTurnMapper {
  state: RunState | null = null;
  /** The final reply (`chat` `final`). */
  finalText = '';
  /** Text of the latest assistant message that had text (the partial one after a stop). */
  lastText = '';
  errorMessage = '';
  errorCode = 'model_error';
  /** Output tokens as the run streams them (its `usage` events are running totals). */
  streamUsage: Usage = { ...ZERO_USAGE };
  readonly ended: Promise<void>;
  private end!: () => void;
  /** Per text item: what was already emitted as deltas. */
  private readonly itemText = new Map<string, string>();
  private replyText = '';
  private deltaSource: string | null = null;

  constructor(
    private readonly emit: EventSink,
    private readonly runId: string,
  ) {
    this.ended = new Promise((resolve) => (this.end = resolve));
  }

  /** Ends the wait without a terminal event (connection lost, stop grace over). */
  interrupt(): void {
    this.end();
  }

  handle(event: string, payload: unknown): void {
    const p = (payload ?? {}) as RunEvent;
    if (this.state || p.runId !== this.runId) return;
    if (event === 'chat') this.onChat(p);
    else if (event === 'agent') this.onAgent(p.stream ?? '', p.data ?? {});
  }

  private onChat(p: RunEvent): void {
    if (p.state === 'delta' && typeof p.deltaText === 'string') {
      // `replace` rewrites the reply so far; deltas already sent stay as they were.
      this.replyText = p.replace ? p.deltaText : this.replyText + p.deltaText;
      this.lastText = this.replyText;
      if (!p.replace && p.deltaText) this.delta('reply', p.deltaText);
    } else if (p.state === 'final') {
      this.finalText = textOf(p.message?.content) || this.replyText;
      this.catchUp(this.finalText);
      if (this.finalText) this.emit({ type: 'message', data: { role: 'assistant', content: this.finalText } });
      this.finish('completed');
    } else if (p.state === 'aborted') {
      this.catchUp(textOf(p.message?.content));
      this.finish('aborted');
    } else if (p.state === 'error') {
      this.errorMessage = String(p.errorMessage || 'The model request failed.');
      this.errorCode = String(p.errorKind || 'model_error');
      this.finish('error');
    }
  }

  private onAgent(stream: string, data: AgentData): void {
    if (stream === 'item' && data.kind === 'preamble' && typeof data.progressText === 'string') {
      const id = String(data.itemId ?? '');
      const before = this.itemText.get(id) ?? '';
      const text = data.progressText;
      if (text.startsWith(before) && text.length > before.length) this.delta(`item:${id}`, text.slice(before.length));
      this.itemText.set(id, text);
      this.lastText = text;
      if (data.phase === 'end' && text) this.emit({ type: 'message', data: { role: 'assistant', content: text } });
    } else if (stream === 'tool' && data.phase === 'start') {
      this.emit({ type: 'tool.call', data: { id: String(data.toolCallId), name: String(data.name), input: data.args ?? {} } });
    } else if (stream === 'tool' && data.phase === 'result') {
      this.emit({
        type: 'tool.result',
        data: { toolCallId: String(data.toolCallId), output: toolOutput(data.result), isError: data.isError === true },
      });
    } else if (stream === 'usage' && typeof data.outputTokens === 'number') {
      this.streamUsage.outputTokens = Math.max(this.streamUsage.outputTokens, data.outputTokens);
    }
  }

  /**
   * Chat deltas are throttled: the last of them may not have been sent when the run ends.
   * The final (or partial) message has the whole text; what the deltas missed is sent now,
   * so the streamed text always adds up to the output.
   */
  private catchUp(text: string): void {
    if (!text) return;
    if (text.startsWith(this.replyText) && text.length > this.replyText.length) this.delta('reply', text.slice(this.replyText.length));
    this.replyText = text;
    this.lastText = text;
  }

  /**
   * OpenClaw trims each message, so a blank line goes between two messages' deltas: the
   * streamed text reads as the messages do.
   */
  private delta(source: string, text: string): void {
    if (this.deltaSource !== null && this.deltaSource !== source) text = `\n\n${text}`;
    this.deltaSource = source;
    this.emit({ type: 'text.delta', data: { text } });
  }

  private finish(state: RunState): void {
    this.state = state;
    this.end();
  }
}

export function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return (content as Block[]).map((b) => (b?.type === 'text' ? String(b.text ?? '') : '')).join('');
}

function toolOutput(result: unknown): string {
  if (typeof result === 'string') return result;
  const content = (result as { content?: unknown } | null)?.content;
  if (Array.isArray(content)) return (content as Block[]).map((b) => (b?.type === 'text' ? String(b.text) : `[${b?.type ?? 'block'}]`)).join('\n');
  return result === undefined ? '' : JSON.stringify(result);
}
