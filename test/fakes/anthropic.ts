/**
 * A fake Anthropic Messages API on loopback for tests of the `claude` runtime.
 *
 * It speaks the real wire format of `POST /v1/messages` (SSE when `stream: true`, one JSON
 * `Message` when `stream: false`, which is the CLI's non-streaming fallback) and answers the
 * other calls Claude Code may make (`count_tokens`, model listing, HEAD probes) so nothing
 * hangs. Tests queue scripted turns; each model request takes the first queued script whose
 * `match` accepts it. Auxiliary requests (no tools or a small `max_tokens`: titles, quota
 * probes) get a default reply and are recorded apart, so they never consume a script.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type FakeBlock =
  | { type: 'text'; text: string | string[] }
  | { type: 'tool_use'; id?: string; name: string; input: Record<string, unknown> };

export interface FakeHttpError {
  status: number;
  type: string;
  message: string;
}

export interface FakeModelRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: any;
}

export interface FakeScript {
  /** Which request this script answers; default: the next model request. */
  match?: (request: FakeModelRequest) => boolean;
  /** Content to send; a text given as an array is streamed one element per delta. */
  blocks?: FakeBlock[];
  /** Default: `tool_use` when a block is a tool call, else `end_turn`. */
  stopReason?: string;
  /** Answer with this HTTP error instead of a message. */
  error?: FakeHttpError;
  /** Send an SSE `error` event after this many deltas instead of finishing the stream. */
  streamErrorAfter?: number;
  /** Stream this many deltas, then wait for `resume()` before sending the rest. */
  pauseAfter?: number;
  /** Delay before each delta, in ms (for slow streams that need no coordination). */
  delayMs?: number;
  /** Answer this many requests (default 1); `Infinity` keeps the script forever. */
  times?: number;
}

export interface ScriptHandle {
  /** Resolves with the request the script answered (the first one, when `times` > 1). */
  readonly request: Promise<FakeModelRequest>;
  /** Resolves when the stream reached `pauseAfter` deltas. */
  readonly paused: Promise<void>;
  /** Lets a paused stream finish. */
  resume(): void;
  /** Resolves when the client went away before the stream ended. */
  readonly disconnected: Promise<void>;
}

interface Queued {
  script: FakeScript;
  remaining: number;
  handle: ScriptHandle;
  settle: { request(r: FakeModelRequest): void; paused(): void; disconnected(): void };
  resumed: Promise<void>;
}

export const AUXILIARY_REPLY = 'ok';
export const UNSCRIPTED_REPLY = 'fake: no script matched';

/** All user-side text after the last assistant message: the current turn's input. */
export function turnText(body: any): string {
  const messages: any[] = body?.messages ?? [];
  let i = messages.length - 1;
  while (i >= 0 && messages[i].role !== 'assistant') i--;
  return messages.slice(i + 1).map((m) => contentText(m.content)).join('\n');
}

/** Every text of a request's messages (history included), for history assertions. */
export function allText(body: any): string {
  return (body?.messages ?? []).map((m: any) => contentText(m.content)).join('\n');
}

function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((b: any) => (b.type === 'text' ? b.text : b.type === 'tool_result' ? contentText(b.content) : ''))
    .join('\n');
}

function isAuxiliary(body: any): boolean {
  return !Array.isArray(body?.tools) || body.tools.length === 0 || (body.max_tokens ?? Infinity) <= 1024;
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

export class FakeAnthropic {
  readonly apiKey: string;
  url = '';
  /** Model requests that reached the scripts (POST /v1/messages), in arrival order. */
  readonly requests: FakeModelRequest[] = [];
  /** Auxiliary model requests (titles, probes) answered with `AUXILIARY_REPLY`. */
  readonly auxiliary: FakeModelRequest[] = [];
  /** Every other request (count_tokens, model list, HEAD, unknown paths). */
  readonly other: FakeModelRequest[] = [];
  private readonly queue: Queued[] = [];
  private readonly server: http.Server;
  private messageCount = 0;

  constructor(apiKey = 'sk-ant-fake') {
    this.apiKey = apiKey;
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.handle(req, res, Buffer.concat(chunks).toString('utf8')).catch((err) => {
          if (!res.headersSent) res.writeHead(500);
          res.end(String(err));
        });
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const q of this.queue) q.settle.disconnected();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Queues a scripted reply. */
  script(script: FakeScript): ScriptHandle {
    const request = deferred<FakeModelRequest>();
    const paused = deferred<void>();
    const resumed = deferred<void>();
    const disconnected = deferred<void>();
    const handle: ScriptHandle = {
      request: request.promise,
      paused: paused.promise,
      resume: () => resumed.resolve(),
      disconnected: disconnected.promise,
    };
    this.queue.push({
      script,
      remaining: script.times ?? 1,
      handle,
      settle: { request: request.resolve, paused: () => paused.resolve(), disconnected: () => disconnected.resolve() },
      resumed: resumed.promise,
    });
    return handle;
  }

  /** Scripts still waiting for a request. */
  get pending(): number {
    return this.queue.length;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse, raw: string): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    let body: any = {};
    try {
      body = raw ? JSON.parse(raw) : {};
    } catch {
      body = { raw };
    }
    const recorded: FakeModelRequest = { method: req.method ?? 'GET', path, headers: req.headers, body };
    const json = (status: number, obj: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    const isMessages = req.method === 'POST' && path === '/v1/messages';
    if (!isMessages) {
      this.other.push(recorded);
      if (req.method === 'HEAD') return void res.writeHead(200).end();
      if (req.method === 'POST' && path === '/v1/messages/count_tokens') return json(200, { input_tokens: 42 });
      if (req.method === 'GET' && path === '/v1/models') return json(200, { data: [], has_more: false, first_id: null, last_id: null });
      return json(404, { type: 'error', error: { type: 'not_found_error', message: `no route ${path}` } });
    }
    const key = req.headers['x-api-key'] ?? String(req.headers.authorization ?? '').replace(/^Bearer /, '');
    if (key !== this.apiKey) {
      this.other.push(recorded);
      return json(401, { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } });
    }
    if (isAuxiliary(body)) {
      this.auxiliary.push(recorded);
      return this.reply(res, body, { blocks: [{ type: 'text', text: AUXILIARY_REPLY }] });
    }
    this.requests.push(recorded);
    const index = this.queue.findIndex((q) => !q.script.match || q.script.match(recorded));
    if (index < 0) return this.reply(res, body, { blocks: [{ type: 'text', text: UNSCRIPTED_REPLY }] });
    const queued = this.queue[index];
    if (--queued.remaining <= 0) this.queue.splice(index, 1);
    queued.settle.request(recorded);
    if (queued.script.error) {
      const { status, type, message } = queued.script.error;
      return json(status, { type: 'error', error: { type, message } });
    }
    return this.reply(res, body, queued.script, queued);
  }

  private async reply(res: http.ServerResponse, body: any, script: FakeScript, queued?: Queued): Promise<void> {
    const id = `msg_fake_${++this.messageCount}`;
    const blocks = (script.blocks ?? []).map((b, i) =>
      b.type === 'tool_use' ? { ...b, id: b.id ?? `toolu_fake_${this.messageCount}_${i}` } : b,
    );
    const stopReason = script.stopReason ?? (blocks.some((b) => b.type === 'tool_use') ? 'tool_use' : 'end_turn');
    const usage = { input_tokens: 100, output_tokens: 1, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
    const outputTokens = 10 * blocks.length;
    const model = body.model ?? 'claude-fake';

    if (!body.stream) {
      const content = blocks.map((b) => (b.type === 'text' ? { type: 'text', text: pieces(b.text).join('') } : b));
      res.writeHead(200, { 'content-type': 'application/json', 'request-id': `req_${id}` });
      res.end(JSON.stringify({
        id, type: 'message', role: 'assistant', model, content, stop_reason: stopReason, stop_sequence: null,
        usage: { ...usage, output_tokens: outputTokens },
      }));
      return;
    }

    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': `req_${id}` });
    // req 'close' fires once the body is read; only the response tells a real disconnect.
    let gone = false;
    res.on('close', () => {
      if (res.writableEnded) return;
      gone = true;
      queued?.settle.disconnected();
    });
    const send = (event: string, data: object) => {
      if (!gone) res.write(`event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`);
    };
    let deltas = 0;
    let pausedOnce = false;
    // Runs before each delta and before the end: the scripted pause and mid-stream error.
    const checkpoint = async (): Promise<boolean> => {
      if (queued && script.pauseAfter === deltas && !pausedOnce) {
        pausedOnce = true;
        queued.settle.paused();
        await Promise.race([queued.resumed, queued.handle.disconnected]);
      }
      if (script.streamErrorAfter === deltas) {
        send('error', { error: { type: 'overloaded_error', message: 'Overloaded' } });
        res.end();
        return false;
      }
      return !gone;
    };
    const delta = async (index: number, payload: object): Promise<boolean> => {
      if (!(await checkpoint())) return false;
      if (script.delayMs) await new Promise((r) => setTimeout(r, script.delayMs));
      send('content_block_delta', { index, delta: payload });
      deltas++;
      return true;
    };

    send('message_start', { message: { id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage } });
    send('ping', {});
    for (const [index, b] of blocks.entries()) {
      if (b.type === 'text') {
        send('content_block_start', { index, content_block: { type: 'text', text: '' } });
        for (const piece of pieces(b.text)) {
          if (!(await delta(index, { type: 'text_delta', text: piece }))) return;
        }
      } else {
        send('content_block_start', { index, content_block: { type: 'tool_use', id: b.id, name: b.name, input: {} } });
        const js = JSON.stringify(b.input);
        const mid = js.length >> 1;
        for (const part of [js.slice(0, mid), js.slice(mid)]) {
          if (!(await delta(index, { type: 'input_json_delta', partial_json: part }))) return;
        }
      }
      send('content_block_stop', { index });
    }
    if (!(await checkpoint())) return;
    send('message_delta', { delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: outputTokens } });
    send('message_stop', {});
    res.end();
  }
}

function pieces(text: string | string[]): string[] {
  return Array.isArray(text) ? text : text.split(/(?<= )/);
}

export async function startFakeAnthropic(apiKey?: string): Promise<FakeAnthropic> {
  return new FakeAnthropic(apiKey).start();
}
