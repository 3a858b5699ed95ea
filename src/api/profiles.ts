import { Type } from 'typebox';
import { findApp } from '../core/apps.js';
import type { Ctx } from '../core/context.js';
import { createProfile, deleteProfile, describeProfile, findProfile, listProfiles, updateProfile } from '../core/profiles.js';
import { orgOf } from '../server/app.js';
import { AppRef, Id, JsonObject, Nullable, PageQuery, body, envelope, page, query } from '../server/schemas.js';
import type { Api } from './index.js';

const Identifier = Type.String({ minLength: 1, maxLength: 256 });

export const ProfileSchema = Type.Object({
  id: Type.String(),
  appId: Type.String(),
  identifier: Type.String(),
  accessGroupId: Type.String(),
  metadata: Nullable(JsonObject),
  headStateId: Nullable(Type.String()),
  baseVersionId: Nullable(Type.String()),
  usage: Type.Object({ used: Type.Integer(), limit: Nullable(Type.Integer()), resetsAt: Nullable(Type.String()) }),
  status: Type.String(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

const Params = Type.Object({ profile_id: Type.String({ minLength: 1, maxLength: 256 }) });
const AppQuery = query({ appId: Type.Optional(AppRef) });

export function profileRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/profile/create',
    {
      schema: {
        tags: ['profiles'],
        summary: 'Create a user profile for an app.',
        body: body({
          appId: AppRef,
          identifier: Identifier,
          accessGroupId: Type.Optional(Id),
          metadata: Type.Optional(Nullable(JsonObject)),
          returnIfExist: Type.Optional(Type.Boolean()),
        }),
        response: { 200: envelope(ProfileSchema) },
      },
    },
    async (request) => ({ success: true as const, data: await describeProfile(ctx, await createProfile(ctx, orgOf(request), request.body)) }),
  );

  app.get(
    '/v1/profile/list',
    {
      schema: {
        tags: ['profiles'],
        summary: 'Return paginated profiles for an app.',
        querystring: query({ appId: AppRef, ...PageQuery }),
        response: { 200: envelope(page(ProfileSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listProfiles(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/profile/:profile_id',
    {
      schema: {
        tags: ['profiles'],
        summary: 'Return one profile by display id, or by identifier with appId.',
        params: Params,
        querystring: AppQuery,
        response: { 200: envelope(ProfileSchema) },
      },
    },
    async (request) => {
      const org = orgOf(request);
      const appId = request.query.appId ? (await findApp(ctx.db, org, request.query.appId)).id : undefined;
      const profile = await findProfile(ctx.db, org, request.params.profile_id, { appId, includeDeleting: true });
      return { success: true as const, data: await describeProfile(ctx, profile) };
    },
  );

  app.patch(
    '/v1/profile/:profile_id',
    {
      schema: {
        tags: ['profiles'],
        summary: 'Update a profile (metadata: null clears it).',
        params: Params,
        querystring: AppQuery,
        body: body({ identifier: Type.Optional(Identifier), accessGroupId: Type.Optional(Id), metadata: Type.Optional(Nullable(JsonObject)) }),
        response: { 200: envelope(ProfileSchema) },
      },
    },
    async (request) => {
      const profile = await updateProfile(ctx, orgOf(request), request.params.profile_id, request.body, request.query.appId);
      return { success: true as const, data: await describeProfile(ctx, profile) };
    },
  );

  app.delete(
    '/v1/profile/:profile_id',
    {
      schema: {
        tags: ['profiles'],
        summary: 'Delete a profile (answers at once; a job removes its records).',
        params: Params,
        querystring: AppQuery,
        response: { 200: envelope(Type.Object({ id: Type.String(), status: Type.Literal('deleting') })) },
      },
    },
    async (request) => ({ success: true as const, data: await deleteProfile(ctx, orgOf(request), request.params.profile_id, request.query.appId) }),
  );
}
