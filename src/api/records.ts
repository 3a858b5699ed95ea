import { Type } from 'typebox';
import type { Ctx } from '../core/context.js';
import {
  conflictView,
  findConflict,
  findHistory,
  findInstance,
  findSync,
  historyView,
  instanceView,
  listConflicts,
  listHistory,
  listInstances,
  listSyncs,
  syncView,
} from '../core/records.js';
import { orgOf } from '../server/app.js';
import { AppRef, Id, Nullable, PageQuery, envelope, page, query } from '../server/schemas.js';
import type { Api } from './index.js';

// Read endpoints for what runs and syncs record: instances, syncs, conflicts, history.

const Str = Type.String();
const NStr = Nullable(Type.String());
const Usage = Type.Object({ inputTokens: Type.Integer(), outputTokens: Type.Integer(), costUsd: Type.Number() });

export const InstanceSchema = Type.Object({
  id: Str,
  appId: Str,
  channelId: NStr,
  sessionId: NStr,
  profileId: NStr,
  userId: NStr,
  status: Str,
  input: NStr,
  output: NStr,
  error: NStr,
  usage: Usage,
  stateId: NStr,
  createdAt: Str,
  startedAt: NStr,
  completedAt: NStr,
});

export const SyncSchema = Type.Object({
  id: Str,
  appId: Str,
  versionId: Str,
  strategy: Str,
  status: Str,
  total: Type.Integer(),
  processed: Type.Integer(),
  updated: Type.Integer(),
  unchanged: Type.Integer(),
  conflicted: Type.Integer(),
  failed: Type.Integer(),
  createdAt: Str,
  startedAt: NStr,
  completedAt: NStr,
});

export const ConflictSchema = Type.Object({
  id: Str,
  appId: Str,
  profileId: Str,
  syncId: Str,
  path: Str,
  kind: Str,
  strategy: Str,
  status: Str,
  resolution: NStr,
  baseHash: NStr,
  currentHash: NStr,
  incomingHash: NStr,
  resultHash: NStr,
  createdAt: Str,
});

export const HistorySchema = Type.Object({
  id: Str,
  appId: Str,
  instanceId: NStr,
  channelId: NStr,
  sessionId: NStr,
  profileId: NStr,
  userId: NStr,
  status: Str,
  input: NStr,
  output: NStr,
  usage: Usage,
  createdAt: Str,
});

/** A profile display id, or an identifier when the request names the app. */
const ProfileRef = Type.String({ minLength: 1, maxLength: 256 });

export function recordRoutes(app: Api, ctx: Ctx): void {
  app.get(
    '/v1/instance/list',
    {
      schema: {
        tags: ['instances'],
        summary: 'Return paginated instances for an app.',
        querystring: query({ appId: AppRef, ...PageQuery }),
        response: { 200: envelope(page(InstanceSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listInstances(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/instance/:instance_id',
    {
      schema: {
        tags: ['instances'],
        summary: 'Return one response run instance.',
        params: Type.Object({ instance_id: Id }),
        response: { 200: envelope(InstanceSchema) },
      },
    },
    async (request) => ({ success: true as const, data: instanceView(await findInstance(ctx.db, orgOf(request), request.params.instance_id)) }),
  );

  app.get(
    '/v1/sync/list',
    {
      schema: {
        tags: ['sync'],
        summary: 'Return paginated sync jobs for an app.',
        querystring: query({ appId: AppRef, ...PageQuery }),
        response: { 200: envelope(page(SyncSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listSyncs(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/sync/:sync_id',
    {
      schema: { tags: ['sync'], summary: 'Return one version sync job.', params: Type.Object({ sync_id: Id }), response: { 200: envelope(SyncSchema) } },
    },
    async (request) => ({ success: true as const, data: syncView(await findSync(ctx.db, orgOf(request), request.params.sync_id)) }),
  );

  app.get(
    '/v1/conflict/list',
    {
      schema: {
        tags: ['conflicts'],
        summary: 'Return paginated conflict records for an app, optionally filtered by profile, sync and status.',
        querystring: query({
          appId: AppRef,
          profileId: Type.Optional(ProfileRef),
          syncId: Type.Optional(Id),
          status: Type.Optional(Type.Enum(['open', 'resolved'])),
          ...PageQuery,
        }),
        response: { 200: envelope(page(ConflictSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listConflicts(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/conflict/:conflict_id',
    {
      schema: {
        tags: ['conflicts'],
        summary: 'Return one sync conflict record.',
        params: Type.Object({ conflict_id: Id }),
        response: { 200: envelope(ConflictSchema) },
      },
    },
    async (request) => ({ success: true as const, data: conflictView(await findConflict(ctx.db, orgOf(request), request.params.conflict_id)) }),
  );

  app.get(
    '/v1/history/list',
    {
      schema: {
        tags: ['history'],
        summary: 'Return paginated history records matching every given filter (at least one is required).',
        querystring: query({
          appId: Type.Optional(AppRef),
          profileId: Type.Optional(ProfileRef),
          sessionId: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
          userId: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
          historyId: Type.Optional(Id),
          ...PageQuery,
        }),
        response: { 200: envelope(page(HistorySchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listHistory(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/history/:history_id',
    {
      schema: {
        tags: ['history'],
        summary: 'Return one history record.',
        params: Type.Object({ history_id: Id }),
        response: { 200: envelope(HistorySchema) },
      },
    },
    async (request) => ({ success: true as const, data: historyView(await findHistory(ctx.db, orgOf(request), request.params.history_id)) }),
  );
}
