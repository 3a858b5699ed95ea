import { Type } from 'typebox';
import type { Ctx } from '../core/context.js';
import { createSession, deleteSession, findSession, listSessions, sessionView } from '../core/sessions.js';
import { orgOf } from '../server/app.js';
import { AppRef, Nullable, PageQuery, body, envelope, page, query } from '../server/schemas.js';
import type { Api } from './index.js';

const SessionSchema = Type.Object({
  id: Type.String(),
  appId: Type.String(),
  type: Type.String(),
  profileId: Nullable(Type.String()),
  lastInstanceId: Nullable(Type.String()),
  turns: Type.Integer(),
  createdAt: Type.String(),
  lastActiveAt: Type.String(),
});

// Any caller string a run may have named, verbatim.
const Params = Type.Object({ session_id: Type.String({ minLength: 1, maxLength: 128 }) });

export function sessionRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/session/create',
    {
      schema: {
        tags: ['sessions'],
        summary: 'Create a persistent session (claude apps: single only).',
        body: body({ appId: AppRef, type: Type.Enum(['single', 'group']) }),
        response: { 200: envelope(SessionSchema) },
      },
    },
    async (request) => ({ success: true as const, data: sessionView(await createSession(ctx, orgOf(request), request.body)) }),
  );

  app.get(
    '/v1/session/list',
    {
      schema: {
        tags: ['sessions'],
        summary: 'Return paginated sessions for an app.',
        querystring: query({ appId: AppRef, ...PageQuery }),
        response: { 200: envelope(page(SessionSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listSessions(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/session/:session_id',
    { schema: { tags: ['sessions'], summary: 'Return one session.', params: Params, response: { 200: envelope(SessionSchema) } } },
    async (request) => ({ success: true as const, data: sessionView(await findSession(ctx.db, orgOf(request), request.params.session_id)) }),
  );

  app.delete(
    '/v1/session/:session_id',
    {
      schema: {
        tags: ['sessions'],
        summary: 'Delete a session.',
        params: Params,
        response: { 200: envelope(Type.Object({ id: Type.String(), deleted: Type.Literal(true) })) },
      },
    },
    async (request) => ({ success: true as const, data: await deleteSession(ctx, orgOf(request), request.params.session_id) }),
  );
}
