import { Type } from 'typebox';
import { appView, createApp, deleteApp, getApp, listApps, updateApp } from '../core/apps.js';
import type { Ctx } from '../core/context.js';
import { orgOf } from '../server/app.js';
import { AppRef, Name, Nullable, PageQuery, Slug, body, envelope, page, query } from '../server/schemas.js';
import type { Api } from './index.js';

const Interval = Type.Union([Type.Literal('daily'), Type.Literal('monthly'), Type.Literal('yearly')]);

export const AppSchema = Type.Object({
  id: Type.String(),
  slug: Type.String(),
  name: Type.String(),
  type: Type.String(),
  headVersionId: Nullable(Type.String()),
  defaultAccessGroupId: Nullable(Type.String()),
  credentials: Type.Array(Type.Object({ type: Type.String(), mcp_server_url: Type.String(), token: Type.String() })),
  status: Type.String(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

const Credential = Type.Object(
  {
    type: Type.Literal('static_bearer'),
    mcp_server_url: Type.String({ format: 'uri', pattern: '^https?://', maxLength: 2048 }),
    token: Type.String({ minLength: 1, maxLength: 8192 }),
  },
  { additionalProperties: false },
);

const AppParams = Type.Object({ app_id: AppRef });

export function appRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/app/create',
    {
      schema: {
        tags: ['apps'],
        summary: 'Create a Harnesslayer app.',
        body: body({
          slug: Slug,
          type: Type.Union([Type.Literal('claude'), Type.Literal('openclaw')]),
          name: Type.Optional(Name),
          limit: Type.Optional(
            body({
              amount: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }),
              interval: Interval,
              name: Type.Optional(Name),
              message: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
            }),
          ),
          credentials: Type.Optional(Type.Array(Credential, { maxItems: 50 })),
          returnIfExist: Type.Optional(Type.Boolean()),
        }),
        response: { 200: envelope(AppSchema) },
      },
    },
    async (request) => ({ success: true as const, data: appView(ctx, await createApp(ctx, orgOf(request), request.body)) }),
  );

  app.get(
    '/v1/app/list',
    {
      schema: {
        tags: ['apps'],
        summary: "Return paginated apps for the organization (optionally filtered by appId).",
        querystring: query({ appId: Type.Optional(AppRef), ...PageQuery }),
        response: { 200: envelope(page(AppSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listApps(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/app/:app_id',
    {
      schema: { tags: ['apps'], summary: 'Return one app by display id or slug.', params: AppParams, response: { 200: envelope(AppSchema) } },
    },
    async (request) => ({ success: true as const, data: await getApp(ctx, orgOf(request), request.params.app_id) }),
  );

  app.patch(
    '/v1/app/:app_id',
    {
      schema: {
        tags: ['apps'],
        summary: 'Update app slug or display name.',
        params: AppParams,
        body: body({ slug: Type.Optional(Slug), name: Type.Optional(Name) }),
        response: { 200: envelope(AppSchema) },
      },
    },
    async (request) => ({ success: true as const, data: appView(ctx, await updateApp(ctx, orgOf(request), request.params.app_id, request.body)) }),
  );

  app.delete(
    '/v1/app/:app_id',
    {
      schema: {
        tags: ['apps'],
        summary: 'Delete an app and related records.',
        params: AppParams,
        response: { 200: envelope(Type.Object({ id: Type.String(), status: Type.Literal('deleting') })) },
      },
    },
    async (request) => ({ success: true as const, data: await deleteApp(ctx, orgOf(request), request.params.app_id) }),
  );
}

export { Interval };
