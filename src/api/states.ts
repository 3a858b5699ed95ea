import { Type } from 'typebox';
import type { Ctx } from '../core/context.js';
import { stateDownload } from '../core/downloads.js';
import { requestSnapshot } from '../core/snapshots.js';
import { completeStateUpload, createState, getState, listStates, rollbackState, uploadState } from '../core/states.js';
import { orgOf } from '../server/app.js';
import { Id, Nullable, PageQuery, body, envelope, page, query } from '../server/schemas.js';
import type { Api } from './index.js';
import { BatchUrl, CallerId, DownloadSchema, FileEntry, Files, UploadUrls } from './versions.js';

export const StateSchema = Type.Object({
  id: Type.String(),
  profileId: Type.String(),
  number: Type.Integer(),
  parentStateId: Nullable(Type.String()),
  baseVersionId: Nullable(Type.String()),
  source: Type.String(),
  status: Type.String(),
  error: Type.Optional(Type.String()),
  fileCount: Type.Integer(),
  size: Type.Number(),
  treeHash: Nullable(Type.String()),
  isHead: Type.Boolean(),
  createdAt: Type.String(),
  files: Type.Optional(Type.Array(FileEntry)),
});

const ProfileId = Type.String({ minLength: 1, maxLength: 256, description: 'Profile display id.' });
const StateParams = Type.Object({ state_id: Type.String({ minLength: 1, maxLength: 128 }) });

export function stateRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/state/upload',
    {
      schema: {
        tags: ['states'],
        summary: 'Create signed upload URLs for a new profile state bundle.',
        body: body({ profileId: ProfileId, stateId: Type.Optional(CallerId), files: Files }),
        response: { 200: envelope(Type.Object({ uploadId: Type.String(), stateId: Type.String(), expiresAt: Type.String(), uploadUrls: UploadUrls, batchUrl: BatchUrl })) },
      },
    },
    async (request) => ({ success: true as const, data: await uploadState(ctx, orgOf(request), request.body) }),
  );

  app.post(
    '/v1/state/upload/:upload_id/complete',
    {
      schema: {
        tags: ['states'],
        summary: 'Complete a state upload and register it as the profile head state (409 head_moved if the head changed).',
        params: Type.Object({ upload_id: Id }),
        body: body({ profileId: ProfileId, stateId: Id }),
        response: { 200: envelope(StateSchema) },
      },
    },
    async (request) => ({ success: true as const, data: await completeStateUpload(ctx, orgOf(request), request.params.upload_id, request.body) }),
  );

  app.post(
    '/v1/state/create',
    {
      schema: {
        tags: ['states'],
        summary: 'Register the next profile state from an uploaded bundle.',
        body: body({ profileId: ProfileId, stateId: Id }),
        response: { 200: envelope(StateSchema) },
      },
    },
    async (request) => ({ success: true as const, data: await createState(ctx, orgOf(request), request.body) }),
  );

  app.post(
    '/v1/state/snapshot',
    {
      schema: {
        tags: ['states'],
        summary: 'Register a state from an archive (zip or tar.gz) stored by this server; materialized in the background.',
        body: body({ profileId: ProfileId, storageUrl: Type.String({ minLength: 1, maxLength: 8192 }), sandboxId: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })) }),
        response: { 200: envelope(StateSchema) },
      },
    },
    async (request) => ({ success: true as const, data: await requestSnapshot(ctx, orgOf(request), request.body) }),
  );

  app.post(
    '/v1/state/rollback',
    {
      schema: {
        tags: ['states'],
        summary: 'Move the profile head state back to an existing state.',
        body: body({ profileId: ProfileId, toStateId: Id, reason: Type.Optional(Type.String({ maxLength: 4096 })) }),
        response: { 200: envelope(StateSchema) },
      },
    },
    async (request) => ({ success: true as const, data: await rollbackState(ctx, orgOf(request), request.body) }),
  );

  app.post(
    '/v1/state/download/:state_id',
    {
      schema: {
        tags: ['states'],
        summary: 'Return a signed URL for a state archive (zip).',
        params: StateParams,
        response: { 200: envelope(DownloadSchema) },
      },
    },
    // No documented body fields: no body or `{}` (server/app.ts refuses anything else).
    async (request) => {
      return { success: true as const, data: await stateDownload(ctx, orgOf(request), request.params.state_id) };
    },
  );

  app.get(
    '/v1/state/list',
    {
      schema: {
        tags: ['states'],
        summary: 'Return paginated states for a profile, highest number first.',
        querystring: query({ profileId: ProfileId, ...PageQuery }),
        response: { 200: envelope(page(StateSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listStates(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/state/:state_id',
    { schema: { tags: ['states'], summary: 'Return one state with its files.', params: StateParams, response: { 200: envelope(StateSchema) } } },
    async (request) => ({ success: true as const, data: await getState(ctx, orgOf(request), request.params.state_id) }),
  );
}
