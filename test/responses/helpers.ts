import http from 'node:http';
import path from 'node:path';
import { turnText, type FakeBlock, type FakeModelRequest, type FakeScript } from '../fakes/anthropic.js';
import type { TestServer } from '../helpers/server.js';

/** Helpers for the response pipeline tests: runs, polls, SSE, and scripts keyed by marker words. */

export const PNG_1PX = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';

export interface PolledEvent {
  seq: number;
  type: string;
  data: any;
  done: boolean;
  createdAt: string;
}

/** A script for the model request whose current turn mentions `marker`. */
export function onTurn(marker: string, script: Omit<FakeScript, 'match'>): FakeScript {
  return { ...script, match: (r) => turnText(r.body).includes(marker) };
}

/** The run's working directory, as Claude Code tells the model (its environment section). */
export function workDirOf(request: FakeModelRequest, dataDir: string): string {
  const id = /\/runs\/((?:inst|session)-[A-Za-z0-9]+)\/work/.exec(JSON.stringify(request.body))?.[1];
  if (!id) throw new Error('no working directory in the model request');
  return path.join(dataDir, 'runs', id, 'work');
}

/** A script for the model request that carries the result of tool call `toolUseId`. */
export function afterTool(toolUseId: string, script: Omit<FakeScript, 'match'>): FakeScript {
  return { ...script, match: (r) => JSON.stringify(r.body.messages?.at(-1) ?? null).includes(`"tool_use_id":"${toolUseId}"`) };
}

/**
 * A script whose blocks are decided when its request arrives (the fake reads `blocks` at
 * reply time): e.g. a Write tool call with an absolute path inside that run's working dir.
 */
export function dynamic(marker: string, blocks: (request: FakeModelRequest) => FakeBlock[]): FakeScript {
  let seen: FakeModelRequest | undefined;
  return {
    match: (r) => {
      if (!turnText(r.body).includes(marker)) return false;
      seen = r;
      return true;
    },
    get blocks() {
      return seen ? blocks(seen) : [];
    },
  };
}

export function client(t: TestServer, key: string) {
  const call = (method: string, url: string, body?: unknown, headers?: Record<string, string>) => t.call(method, url, { key, body, headers });
  return {
    call,
    run: (body: Record<string, unknown>, headers?: Record<string, string>) => call('POST', '/v1/response/run', body, headers),
    poll: (id: string, after = 0, timeoutMs = 0) => call('GET', `/v1/response/poll/${id}?after=${after}&timeoutMs=${timeoutMs}`),
    stop: (instanceId: string) => call('POST', '/v1/response/stop', { instanceId }),
    instance: async (id: string) => (await call('GET', `/v1/instance/${id}`)).body.data,
    /** Long-polls until the streamed text so far is `text` (the worker stored those deltas). */
    async streamed(id: string, text: string): Promise<PolledEvent[]> {
      const out: PolledEvent[] = [];
      let after = 0;
      while (texts(out) !== text) {
        const res = await call('GET', `/v1/response/poll/${id}?after=${after}&timeoutMs=20000`);
        if (res.status !== 200 || res.body.data.done) throw new Error(`no text "${text}" in ${JSON.stringify(out)}: ${JSON.stringify(res.body)}`);
        out.push(...res.body.data.events);
        after = res.body.data.cursor;
      }
      return out;
    },
    /** Long-polls until the done event; returns every event in order. */
    async events(id: string, timeoutMs = 60_000): Promise<PolledEvent[]> {
      const out: PolledEvent[] = [];
      const deadline = Date.now() + timeoutMs;
      let after = 0;
      for (;;) {
        const res = await call('GET', `/v1/response/poll/${id}?after=${after}&timeoutMs=20000`);
        if (res.status !== 200) throw new Error(`poll failed: ${JSON.stringify(res.body)}`);
        out.push(...res.body.data.events);
        after = res.body.data.cursor;
        if (res.body.data.done) return out;
        if (Date.now() > deadline) throw new Error(`instance ${id} did not end; events: ${JSON.stringify(out)}`);
      }
    },
  };
}

export const texts = (events: PolledEvent[]) =>
  events
    .filter((e) => e.type === 'text.delta')
    .map((e) => e.data.text)
    .join('');

export interface SseEvent {
  id: number;
  event: string;
  data: PolledEvent;
}

/**
 * Reads a server-sent event stream over a real socket until `stopAfter` events (then
 * disconnects) or until the server closes it.
 */
export function readSse(url: string, key: string, opts: { lastEventId?: string; stopAfter?: number } = {}): Promise<{ status: number; events: SseEvent[]; comments: string[]; closedByServer: boolean; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { authorization: `Bearer ${key}` };
    if (opts.lastEventId !== undefined) headers['last-event-id'] = opts.lastEventId;
    const req = http.get(url, { headers }, (res) => {
      let buffer = '';
      let body = '';
      const events: SseEvent[] = [];
      const comments: string[] = [];
      let finished = false;
      const finish = (closedByServer: boolean) => {
        if (finished) return;
        finished = true;
        resolve({ status: res.statusCode ?? 0, events, comments, closedByServer, body });
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields: Record<string, string> = {};
          for (const line of frame.split('\n')) {
            if (line.startsWith(':')) comments.push(line);
            else {
              const i = line.indexOf(': ');
              fields[line.slice(0, i)] = line.slice(i + 2);
            }
          }
          if (fields.id !== undefined) events.push({ id: Number(fields.id), event: fields.event, data: JSON.parse(fields.data) });
          if (opts.stopAfter !== undefined && events.length >= opts.stopAfter) {
            req.destroy();
            return finish(false);
          }
        }
      });
      res.on('end', () => finish(true));
      res.on('close', () => finish(true));
    });
    req.on('error', (err) => (err.message === 'socket hang up' ? undefined : reject(err)));
  });
}
