import { Type } from 'typebox';
import type { Ctx } from '../core/context.js';
import { versionDownload } from '../core/downloads.js';
import { completeVersionUpload, createVersion, getVersion, listVersions, rollbackVersion, uploadVersion } from '../core/versions.js';
import { orgOf } from '../server/app.js';
import { AppRef, Id, Nullable, PageQuery, body, envelope, page, query } from '../server/schemas.js';
import type { Api } from './index.js';

/** Caller-chosen version and state ids. */
export const CallerId = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$', description: '1-64 characters of A-Z a-z 0-9 _ -.' });

export const FileDecl = Type.Object(
  {
    name: Type.String({ maxLength: 4096, description: 'Relative POSIX path, at most 1,024 bytes.' }),
    hash: Type.String({ maxLength: 200, description: 'sha256-<64 hex>, sha256-<base64> or 64 hex.' }),
  },
  { additionalProperties: false },
);
export const Files = Type.Array(FileDecl, { maxItems: 10_000 });

export const FileEntry = Type.Object({ name: Type.String(), hash: Type.String(), size: Type.Number() });

export const UploadUrls = Type.Array(
  Type.Object({
    name: Type.String(),
    url: Type.String(),
    method: Type.Literal('PUT'),
    headers: Type.Record(Type.String(), Type.String()),
    exists: Type.Boolean(),
  }),
);

export const BatchUrl = Type.Optional(Type.Object({ url: Type.String(), method: Type.Literal('PUT'), headers: Type.Record(Type.String(), Type.String()) }));

export const VersionSchema = Type.Object({
  id: Type.String(),
  appId: Type.String(),
  number: Type.Integer(),
  parentVersionId: Nullable(Type.String()),
  fileCount: Type.Integer(),
  size: Type.Number(),
  treeHash: Type.String(),
  isHead: Type.Boolean(),
  createdAt: Type.String(),
  files: Type.Optional(Type.Array(FileEntry)),
});

export const DownloadSchema = Type.Object({ url: Type.String(), expiresAt: Type.String() });

const VersionParams = Type.Object({ version_id: Type.String({ minLength: 1, maxLength: 128 }) });

export function versionRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/version/upload',
    {
      schema: {
        tags: ['versions'],
        summary: 'Create signed upload URLs for a new app version bundle.',
        body: body({ appId: AppRef, versionId: Type.Optional(CallerId), files: Files }),
        response: {
          200: envelope(Type.Object({ uploadId: Type.String(), versionId: Type.String(), expiresAt: Type.String(), uploadUrls: UploadUrls, batchUrl: BatchUrl })),
        },
      },
    },
    async (request) => ({ success: true as const, data: await uploadVersion(ctx, orgOf(request), request.body) }),
  );

  app.post(
    '/v1/version/upload/:upload_id/complete',
    {
      schema: {
        tags: ['versions'],
        summary: 'Complete a version upload and register it as the app head version.',
        params: Type.Object({ upload_id: Id }),
        body: body({ appId: AppRef, versionId: Id }),
        response: { 200: envelope(VersionSchema) },
      },
    },
    async (request) => ({ success: true as const, data: await completeVersionUpload(ctx, orgOf(request), request.params.upload_id, request.body) }),
  );

  app.post(
    '/v1/version/create',
    {
      schema: {
        tags: ['versions'],
        summary: 'Register the next app version from an uploaded bundle.',
        body: body({ appId: AppRef, versionId: Id }),
        response: { 200: envelope(VersionSchema) },
      },
    },
    async (request) => ({ success: true as const, data: await createVersion(ctx, orgOf(request), request.body) }),
  );

  app.post(
    '/v1/version/rollback',
    {
      schema: {
        tags: ['versions'],
        summary: 'Move the app head version back to an existing version.',
        body: body({ appId: AppRef, toVersionId: Id, reason: Type.Optional(Type.String({ maxLength: 4096 })) }),
        response: { 200: envelope(VersionSchema) },
      },
    },
    async (request) => ({ success: true as const, data: await rollbackVersion(ctx, orgOf(request), request.body) }),
  );

  app.get(
    '/v1/version/download/:version_id',
    {
      schema: { tags: ['versions'], summary: 'Return a signed URL for a version archive (zip).', params: VersionParams, response: { 200: envelope(DownloadSchema) } },
    },
    async (request) => ({ success: true as const, data: await versionDownload(ctx, orgOf(request), request.params.version_id) }),
  );

  app.get(
    '/v1/version/list',
    {
      schema: {
        tags: ['versions'],
        summary: 'Return paginated versions for an app, highest number first.',
        querystring: query({ appId: AppRef, ...PageQuery }),
        response: { 200: envelope(page(VersionSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listVersions(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/version/:version_id',
    { schema: { tags: ['versions'], summary: 'Return one app version with its files.', params: VersionParams, response: { 200: envelope(VersionSchema) } } },
    async (request) => ({ success: true as const, data: await getVersion(ctx, orgOf(request), request.params.version_id) }),
  );
}
