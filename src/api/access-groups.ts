import { Type } from 'typebox';
import {
  accessGroupView,
  createAccessGroup,
  deleteAccessGroup,
  findAccessGroup,
  listAccessGroups,
  updateAccessGroup,
} from '../core/access-groups.js';
import type { Ctx } from '../core/context.js';
import { orgOf } from '../server/app.js';
import { AppRef, Id, Name, Nullable, PageQuery, body, envelope, page, query } from '../server/schemas.js';
import { Interval } from './apps.js';
import type { Api } from './index.js';

const Limit = Type.Integer({ minimum: 1, maximum: 2_147_483_647 });
const Message = Type.String({ minLength: 1, maxLength: 4096 });

const AccessGroupSchema = Type.Object({
  id: Type.String(),
  appId: Type.String(),
  name: Type.String(),
  limit: Nullable(Type.Integer()),
  limitReset: Type.String(),
  limitMessage: Nullable(Type.String()),
  isDefault: Type.Boolean(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

const Params = Type.Object({ access_group_id: Id });

export function accessGroupRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/access_group/create',
    {
      schema: {
        tags: ['access groups'],
        summary: 'Create an access group.',
        body: body({ appId: AppRef, name: Name, limit: Limit, limitReset: Interval, limitMessage: Type.Optional(Message) }),
        response: { 200: envelope(AccessGroupSchema) },
      },
    },
    async (request) => ({ success: true as const, data: accessGroupView(await createAccessGroup(ctx, orgOf(request), request.body)) }),
  );

  app.get(
    '/v1/access_group/list',
    {
      schema: {
        tags: ['access groups'],
        summary: 'Return paginated access groups for an app.',
        querystring: query({ appId: AppRef, ...PageQuery }),
        response: { 200: envelope(page(AccessGroupSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listAccessGroups(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/access_group/:access_group_id',
    { schema: { tags: ['access groups'], summary: 'Return one access group.', params: Params, response: { 200: envelope(AccessGroupSchema) } } },
    async (request) => ({
      success: true as const,
      data: accessGroupView(await findAccessGroup(ctx.db, orgOf(request), request.params.access_group_id)),
    }),
  );

  app.patch(
    '/v1/access_group/:access_group_id',
    {
      schema: {
        tags: ['access groups'],
        summary: 'Update an access group (limit: null makes it unlimited).',
        params: Params,
        body: body({ name: Type.Optional(Name), limit: Type.Optional(Nullable(Limit)), limitReset: Type.Optional(Interval), limitMessage: Type.Optional(Message) }),
        response: { 200: envelope(AccessGroupSchema) },
      },
    },
    async (request) => ({
      success: true as const,
      data: accessGroupView(await updateAccessGroup(ctx, orgOf(request), request.params.access_group_id, request.body)),
    }),
  );

  app.delete(
    '/v1/access_group/:access_group_id',
    {
      schema: {
        tags: ['access groups'],
        summary: 'Delete an access group (not the default one); its profiles move to the default group.',
        params: Params,
        response: { 200: envelope(Type.Object({ id: Type.String(), deleted: Type.Literal(true) })) },
      },
    },
    async (request) => ({ success: true as const, data: await deleteAccessGroup(ctx, orgOf(request), request.params.access_group_id) }),
  );
}
