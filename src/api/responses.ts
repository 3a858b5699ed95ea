import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { Type } from 'typebox';
import type { Ctx } from '../core/context.js';
import { BadRequestError } from '../core/errors.js';
import { eventView, pollEvents, readPage } from '../core/events.js';
import { findInstance } from '../core/records.js';
import { IMAGE_MEDIA_TYPES, MAX_IMAGES, startRun } from '../core/responses.js';
import { stopInstance } from '../core/runs.js';
import { isFinalStatus } from '../runtime/events.js';
import { orgOf } from '../server/app.js';
import { AppRef, Id, IdParam, JsonObject, body, envelope, query } from '../server/schemas.js';
import type { Api } from './index.js';

// Responses: run a turn, read its events (long-poll or server-sent events), stop it.

const EventSchema = Type.Object({
  seq: Type.Integer(),
  type: Type.String(),
  data: JsonObject,
  done: Type.Boolean(),
  createdAt: Type.String(),
});

const Image = Type.Object(
  {
    mediaType: Type.Optional(Type.Enum([...IMAGE_MEDIA_TYPES])),
    data: Type.Optional(Type.String({ minLength: 1, description: 'Base64, at most 5 MiB decoded.' })),
    url: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
  },
  { additionalProperties: false, description: '{mediaType, data} or {url}.' },
);

const RunBody = body({
  appId: AppRef,
  channelId: Type.String({ minLength: 1, maxLength: 128, description: 'Channel display id or slug (of that app).' }),
  userId: Type.String({ minLength: 1, maxLength: 256, description: 'External user identifier: the profile identifier.' }),
  input: Type.Optional(Type.String({ minLength: 1 })),
  images: Type.Optional(Type.Array(Image, { maxItems: MAX_IMAGES })),
  sessionId: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
});

const InstanceParam = IdParam('instance_id');

/** Comment lines that keep idle proxies from closing a quiet stream. */
export const SSE_HEARTBEAT_MS = 15_000;

export function responseRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/response/run',
    {
      schema: {
        tags: ['responses'],
        summary: 'Run an app response through a channel; poll or stream the instance for its events.',
        body: RunBody,
        response: { 200: envelope(Type.Object({ instanceId: Type.String(), sessionId: Type.String(), profileId: Type.String(), status: Type.Literal('queued') })) },
      },
    },
    async (request) => ({ success: true as const, data: await startRun(ctx, orgOf(request), request.body) }),
  );

  app.get(
    '/v1/response/poll/:instance_id',
    {
      schema: {
        tags: ['responses'],
        summary: 'Events after a cursor; waits up to timeoutMs (default 25000, max 60000) when there are none yet.',
        params: InstanceParam,
        querystring: query({ after: Type.Optional(Type.Integer({ minimum: 0 })), timeoutMs: Type.Optional(Type.Integer()) }),
        response: {
          200: envelope(Type.Object({ instanceId: Type.String(), status: Type.String(), events: Type.Array(EventSchema), cursor: Type.Integer(), done: Type.Boolean() })),
        },
      },
    },
    async (request, reply) => {
      // A client that gives up stops the wait.
      const gone = new AbortController();
      reply.raw.on('close', () => gone.abort());
      const { after = 0, timeoutMs } = request.query;
      return { success: true as const, data: await pollEvents(ctx, orgOf(request), request.params.instance_id, { after, timeoutMs, abort: gone.signal }) };
    },
  );

  app.get(
    '/v1/response/stream/:instance_id',
    {
      schema: {
        tags: ['responses'],
        summary: 'The instance events as server-sent events (id = seq); resume with Last-Event-ID; closes after the done event.',
        params: InstanceParam,
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String()) }),
      },
    },
    async (request, reply) => {
      const instance = await findInstance(ctx.db, orgOf(request), request.params.instance_id);
      const after = lastEventId(request.headers['last-event-id']);
      reply.hijack();
      reply.raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      reply.raw.flushHeaders();
      try {
        await pump(ctx, instance.id, after, reply.raw);
      } catch (err) {
        request.log.error({ err }, 'event stream failed');
      } finally {
        reply.raw.end();
      }
    },
  );

  app.post(
    '/v1/response/stop',
    {
      schema: {
        tags: ['responses'],
        summary: 'Stop an instance: a queued one at once, a running one within 10 s (partial output kept); an ended one is left as is.',
        body: body({ instanceId: Id }),
        response: { 200: envelope(Type.Object({ instanceId: Type.String(), status: Type.String() })) },
      },
    },
    async (request) => ({ success: true as const, data: await stopInstance(ctx, orgOf(request), request.body.instanceId) }),
  );
}

function lastEventId(header: string | string[] | undefined): number {
  const raw = Array.isArray(header) ? header[0] : header;
  if (raw === undefined || raw === '') return 0;
  if (!/^\d+$/.test(raw.trim())) {
    throw new BadRequestError('Last-Event-ID must be the seq of an event (an integer >= 0).', [{ field: 'headers.last-event-id', message: 'must be an integer >= 0' }]);
  }
  return Number(raw.trim());
}

/** Writes events after `after` as they arrive, with heartbeats, until the done event. */
async function pump(ctx: Ctx, instanceId: string, after: number, res: ServerResponse): Promise<void> {
  const closed = new AbortController();
  res.on('close', () => closed.abort());
  const watch = ctx.events.watch('events', instanceId);
  let cursor = after;
  let lastWrite = Date.now();
  const write = async (chunk: string) => {
    lastWrite = Date.now();
    if (!res.write(chunk)) await once(res, 'drain', { signal: closed.signal });
  };
  try {
    while (!closed.signal.aborted && !ctx.events.isClosed) {
      const page = await readPage(ctx.db, instanceId, cursor);
      if (!page) return; // its app was deleted
      const { events } = page;
      if (events.length > 0) {
        cursor = events.at(-1)!.seq;
        await write(events.map((e) => `id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(eventView(e))}\n\n`).join(''));
        if (events.at(-1)!.done) return;
        continue;
      }
      // Nothing more will come: the client resumed past the last event of an ended instance.
      if (isFinalStatus(page.status) && cursor >= page.lastSeq) return;
      await watch.wait(SSE_HEARTBEAT_MS - (Date.now() - lastWrite), closed.signal);
      if (Date.now() - lastWrite >= SSE_HEARTBEAT_MS && !closed.signal.aborted) await write(': ping\n\n');
    }
  } catch (err) {
    if (!closed.signal.aborted) throw err;
  } finally {
    watch.close();
  }
}
