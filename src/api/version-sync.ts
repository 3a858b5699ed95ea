import { Type } from 'typebox';
import type { Ctx } from '../core/context.js';
import { createSync } from '../core/syncs.js';
import { orgOf } from '../server/app.js';
import { AppRef, Id, body, envelope } from '../server/schemas.js';
import type { Api } from './index.js';

export function versionSyncRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/version/sync',
    {
      schema: {
        tags: ['versions'],
        summary: 'Sync the app head version to profile states (a background job; read it with GET /v1/sync/{id}).',
        body: body({
          appId: AppRef,
          strategy: Type.Optional(Type.Union([Type.Literal('smart'), Type.Literal('current'), Type.Literal('incoming'), Type.Literal('manual')])),
          profileIds: Type.Optional(Type.Array(Id, { minItems: 1, maxItems: 10_000 })),
        }),
        response: { 200: envelope(Type.Object({ syncId: Type.String(), status: Type.Literal('queued') })) },
      },
    },
    async (request) => {
      const sync = await createSync(ctx, orgOf(request), request.body);
      return { success: true as const, data: { syncId: sync.id, status: 'queued' as const } };
    },
  );
}
