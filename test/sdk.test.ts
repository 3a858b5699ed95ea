/**
 * The TypeScript SDK (src/sdk/harnesslayer.ts) against a real server: the Python SDK's flow
 * from spec/product-notes.md, with turns run by the real Claude Code on the fake model API.
 */
import { once } from 'node:events';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError, HarnesslayerClient } from '../src/sdk/client.js';
import { Harnesslayer, ResponseStream, type ResponseEvent } from '../src/sdk/harnesslayer.js';
import { startFakeAnthropic, type FakeAnthropic } from './fakes/anthropic.js';
import { declare, put, type UploadUrl } from './files/bundle.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { onTurn } from './responses/helpers.js';

let t: TestServer;
let fake: FakeAnthropic;
let client: Harnesslayer;
let folder: string;
beforeAll(async () => {
  fake = await startFakeAnthropic();
  t = await startTestServer({ listen: true, config: { anthropicBaseUrl: fake.url, anthropicApiKey: fake.apiKey } });
  client = new Harnesslayer({ apiKey: (await t.org()).key, baseUrl: t.url });
  folder = await fs.mkdtemp(path.join(os.tmpdir(), 'harnesslayer-sdk-'));
  await fs.writeFile(path.join(folder, 'CLAUDE.md'), '# Typedef app\n');
});
afterAll(async () => {
  await t?.close();
  await fake?.close();
  await fs.rm(folder, { recursive: true, force: true });
});

/** One event of a response's stream, as the server writes it. */
const frame = (seq: number, done: boolean) =>
  `id: ${seq}\nevent: x\ndata: ${JSON.stringify({ seq, type: done ? 'result' : 'message', data: {}, done, createdAt: new Date().toISOString() })}\n\n`;

/** The events' numbers a ResponseStream reads from a stand-in server on `port`, to the done one. */
async function readStream(port: number): Promise<number[]> {
  const stream = new ResponseStream(new HarnesslayerClient({ baseUrl: `http://127.0.0.1:${port}`, apiKey: 'dk-test' }), Promise.resolve({ instanceId: 'inst-1', sessionId: 's', profileId: 'p', status: 'queued' }));
  const seen: number[] = [];
  for await (const e of stream) seen.push(e.seq);
  return seen;
}

describe('the TypeScript SDK', () => {
  it('app.init creates the app with its folder as the head version, and gets it the next time', async () => {
    const app = await client.app.init('typedef-app', { type: 'claude', versionPath: folder, name: 'Typedef App', limit: { amount: 100, interval: 'monthly', message: 'Out of credits!' } });
    expect(app.data).toMatchObject({ slug: 'typedef-app', name: 'Typedef App', type: 'claude', headVersionId: expect.stringMatching(/^ver-/) });
    const versions = (await client.http.get<{ total: number }>(`/v1/version/list?appId=${app.id}`)).total;
    expect(versions).toBe(1);
    const again = await client.app.init('typedef-app', { type: 'claude', versionPath: folder });
    expect(again.id).toBe(app.id);
    expect((await client.http.get<{ total: number }>(`/v1/version/list?appId=${app.id}`)).total).toBe(1);

    // A folder that is not one creates nothing; an unknown slug without a type says what is missing.
    await expect(client.app.init('no-folder', { type: 'claude', versionPath: path.join(folder, 'missing') })).rejects.toThrow(/is not a folder/);
    await expect(client.http.get('/v1/app/no-folder')).rejects.toMatchObject({ status: 404 });
    await expect(client.app.init('untyped')).rejects.toThrow(/give its type/);
  });

  it('version.create uploads a folder, or registers a bundle uploaded under a versionId; each becomes the head', async () => {
    const app = await client.app.init('versions-app', { type: 'claude', versionPath: folder });
    await fs.writeFile(path.join(folder, 'notes.md'), 'v2\n');
    const v2 = await app.version.create({ versionPath: folder });
    expect(v2).toMatchObject({ number: 2, fileCount: 2 });
    expect(app.data.headVersionId).toBe(v2.id);

    const files = { 'CLAUDE.md': '# v3\n' };
    const up = await client.http.post<{ versionId: string; uploadUrls: UploadUrl[] }>('/v1/version/upload', { appId: app.id, versionId: 'ver-from-sdk', files: declare(files) });
    for (const u of up.uploadUrls) expect((await put(u, files[u.name as keyof typeof files])).status).toBe(200);
    const v3 = await app.version.create({ versionId: 'ver-from-sdk' });
    expect(v3).toMatchObject({ id: 'ver-from-sdk', number: 3, fileCount: 1 });
    expect((await client.app.get(app.id)).data.headVersionId).toBe('ver-from-sdk');
  });

  it('channel.init gets or creates by slug; channel.run streams the events to the done one', async () => {
    const app = await client.app.init('chat-app', { type: 'claude', versionPath: folder });
    const channel = await app.channel.init('my-api', { type: 'api' });
    expect((await app.channel.init('my-api', { type: 'api' })).id).toBe(channel.id);

    fake.script(onTurn('SDK-HELLO', { blocks: [{ type: 'text', text: ['Hello ', 'from the SDK.'] }] }));
    const stream = channel.run({ sessionId: 'my-custom-session-id', userId: 'someone@example.com', input: 'SDK-HELLO world' });
    const events: ResponseEvent[] = [];
    for await (const event of stream) {
      events.push(event);
      if (event.done) break;
    }
    expect((await stream.started).sessionId).toBe('my-custom-session-id');
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events.filter((e) => e.type === 'text.delta').map((e) => e.data.text).join('')).toBe('Hello from the SDK.');
    expect(events.at(-1)).toMatchObject({ type: 'result', done: true, data: { status: 'completed', output: 'Hello from the SDK.' } });

    // A refusal reaches the caller as an ApiError, from `started` and from iterating.
    const refused = channel.run({ userId: 'someone@example.com', input: 'hi', sessionId: 'x'.repeat(200) });
    await expect(refused.started).rejects.toBeInstanceOf(ApiError);
    await expect((async () => {
      for await (const _ of refused) void _;
    })()).rejects.toMatchObject({ status: 400 });
  });

  it('reads a stream that broke off again from its last event, waiting for a server that restarts', async () => {
    // A server of its own, speaking the stream's wire format: it breaks the first connection
    // after one event and is gone for 300 ms; then it answers the rest.
    const asked: (string | undefined)[] = [];
    let server: http.Server;
    const handler: http.RequestListener = (req, res) => {
      asked.push(req.headers['last-event-id'] as string | undefined);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (asked.length > 1) return void res.end(frame(2, true));
      res.write(frame(1, false), () => {
        res.socket?.destroy();
        server.close(() => setTimeout(() => (server = http.createServer(handler).listen(port, '127.0.0.1')), 300));
      });
    };
    server = http.createServer(handler).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    let seen: number[];
    try {
      seen = await readStream(port);
    } finally {
      server.close();
    }
    expect(seen).toEqual([1, 2]);
    expect(asked[0]).toBe('0');
    expect(asked.at(-1)).toBe('1');
  });

  it('waits out a 502-504 while reading a stream again (a proxy, or a server closing, during a restart)', async () => {
    let n = 0;
    const server = http.createServer((_req, res) => {
      n++;
      if (n === 1) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        return void res.write(frame(1, false), () => res.socket?.destroy());
      }
      if (n === 2 || n === 3) {
        res.writeHead(n === 2 ? 503 : 502, { 'content-type': 'application/json', connection: 'close' });
        return void res.end(JSON.stringify({ success: false, error: 'Service Unavailable' }));
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(frame(2, true));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    let seen: number[];
    try {
      seen = await readStream(port);
    } finally {
      server.close();
    }
    expect(seen).toEqual([1, 2]);
    expect(n).toBe(4);
  });
});
