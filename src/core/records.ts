import type { Ctx } from './context.js';
import { BadRequestError, NotFoundError } from './errors.js';
import { findApp } from './apps.js';
import { paginate, type PageParams } from './pagination.js';
import { findProfile } from './profiles.js';
import type { Db } from '../storage/db.js';
import type { Conflict, History, Instance, Sync } from '../storage/schema.js';

// Read side of the records that runs and syncs write: instances, syncs, conflicts and
// history. The views live here so the writers (runs, sync jobs, webhooks) shape them alike.

const iso = (d: Date | null) => (d ? d.toISOString() : null);

function usageOf(r: { inputTokens: number; outputTokens: number; costUsd: number }) {
  return { inputTokens: r.inputTokens, outputTokens: r.outputTokens, costUsd: r.costUsd };
}

export function instanceView(i: Instance) {
  return {
    id: i.id,
    appId: i.appId,
    channelId: i.channelId,
    sessionId: i.sessionId,
    profileId: i.profileId,
    userId: i.userId,
    status: i.status,
    input: i.input,
    output: i.output,
    error: i.error,
    usage: usageOf(i),
    stateId: i.stateId,
    createdAt: i.createdAt.toISOString(),
    startedAt: iso(i.startedAt),
    completedAt: iso(i.completedAt),
  };
}

export function syncView(s: Sync) {
  return {
    id: s.id,
    appId: s.appId,
    versionId: s.versionId,
    strategy: s.strategy,
    status: s.status,
    total: s.total,
    processed: s.processed,
    updated: s.updated,
    unchanged: s.unchanged,
    conflicted: s.conflicted,
    failed: s.failed,
    createdAt: s.createdAt.toISOString(),
    startedAt: iso(s.startedAt),
    completedAt: iso(s.completedAt),
  };
}

export function conflictView(c: Conflict) {
  return {
    id: c.id,
    appId: c.appId,
    profileId: c.profileId,
    syncId: c.syncId,
    path: c.path,
    kind: c.kind,
    strategy: c.strategy,
    status: c.status,
    resolution: c.resolution,
    baseHash: c.baseHash,
    currentHash: c.currentHash,
    incomingHash: c.incomingHash,
    resultHash: c.resultHash,
    createdAt: c.createdAt.toISOString(),
  };
}

export function historyView(h: History) {
  return {
    id: h.id,
    appId: h.appId,
    instanceId: h.instanceId,
    channelId: h.channelId,
    sessionId: h.sessionId,
    profileId: h.profileId,
    userId: h.userId,
    status: h.status,
    input: h.input,
    output: h.output,
    usage: usageOf(h),
    createdAt: h.createdAt.toISOString(),
  };
}

const newestFirst = <Q extends { orderBy(c: 'createdAt' | 'id', d: 'desc'): Q }>(q: Q) => q.orderBy('createdAt', 'desc').orderBy('id', 'desc');

// Each finder: this organization's record, under an app that is not being deleted.

export async function findInstance(db: Db, organizationId: string, id: string): Promise<Instance> {
  const row = await db
    .selectFrom('instances')
    .innerJoin('apps', 'apps.id', 'instances.appId')
    .selectAll('instances')
    .where('instances.id', '=', id)
    .where('instances.organizationId', '=', organizationId)
    .where('apps.status', '=', 'active')
    .executeTakeFirst();
  if (!row) throw new NotFoundError('instance', id);
  return row;
}

export async function findSync(db: Db, organizationId: string, id: string, appId?: string): Promise<Sync> {
  const row = await db
    .selectFrom('syncs')
    .innerJoin('apps', 'apps.id', 'syncs.appId')
    .selectAll('syncs')
    .where('syncs.id', '=', id)
    .where('syncs.organizationId', '=', organizationId)
    .where('apps.status', '=', 'active')
    .executeTakeFirst();
  if (!row || (appId !== undefined && row.appId !== appId)) throw new NotFoundError('sync', id);
  return row;
}

export async function findConflict(db: Db, organizationId: string, id: string): Promise<Conflict> {
  const row = await db
    .selectFrom('conflicts')
    .innerJoin('apps', 'apps.id', 'conflicts.appId')
    .selectAll('conflicts')
    .where('conflicts.id', '=', id)
    .where('conflicts.organizationId', '=', organizationId)
    .where('apps.status', '=', 'active')
    .where((eb) => eb.exists(eb.selectFrom('profiles').select('profiles.id').whereRef('profiles.id', '=', 'conflicts.profileId').where('profiles.status', '=', 'active')))
    .executeTakeFirst();
  if (!row) throw new NotFoundError('conflict', id);
  return row;
}

export async function findHistory(db: Db, organizationId: string, id: string): Promise<History> {
  const row = await db
    .selectFrom('history')
    .innerJoin('apps', 'apps.id', 'history.appId')
    .selectAll('history')
    .where('history.id', '=', id)
    .where('history.organizationId', '=', organizationId)
    .where('apps.status', '=', 'active')
    .executeTakeFirst();
  if (!row) throw new NotFoundError('history record', id);
  return row;
}

export async function listInstances(ctx: Ctx, organizationId: string, params: PageParams & { appId: string }) {
  const app = await findApp(ctx.db, organizationId, params.appId);
  const q = ctx.db.selectFrom('instances').selectAll().where('appId', '=', app.id);
  return paginate(q, params, newestFirst, instanceView);
}

export async function listSyncs(ctx: Ctx, organizationId: string, params: PageParams & { appId: string }) {
  const app = await findApp(ctx.db, organizationId, params.appId);
  const q = ctx.db.selectFrom('syncs').selectAll().where('appId', '=', app.id);
  return paginate(q, params, newestFirst, syncView);
}

export interface ConflictFilters extends PageParams {
  appId: string;
  profileId?: string;
  syncId?: string;
  status?: 'open' | 'resolved';
}

/** Conflicts of one app; the optional filters combine with AND and must name that app's records. */
export async function listConflicts(ctx: Ctx, organizationId: string, params: ConflictFilters) {
  const app = await findApp(ctx.db, organizationId, params.appId);
  // A profile being deleted leaves the lists at once; its conflicts go with it in the job.
  let q = ctx.db
    .selectFrom('conflicts')
    .selectAll()
    .where('appId', '=', app.id)
    .where((eb) => eb.exists(eb.selectFrom('profiles').select('profiles.id').whereRef('profiles.id', '=', 'conflicts.profileId').where('profiles.status', '=', 'active')));
  if (params.profileId !== undefined) {
    const profile = await findProfile(ctx.db, organizationId, params.profileId, { appId: app.id });
    q = q.where('profileId', '=', profile.id);
  }
  if (params.syncId !== undefined) {
    const sync = await findSync(ctx.db, organizationId, params.syncId, app.id);
    q = q.where('syncId', '=', sync.id);
  }
  if (params.status !== undefined) q = q.where('status', '=', params.status);
  return paginate(q, params, newestFirst, conflictView);
}

export interface HistoryFilters extends PageParams {
  appId?: string;
  profileId?: string;
  sessionId?: string;
  userId?: string;
  historyId?: string;
}

/**
 * History records matching every given filter. At least one filter is required: an
 * organization-wide scan is never what a caller means. `appId` and `profileId` must name
 * live records of this organization (404 otherwise); the other filters just narrow. A
 * `sessionId` naming a live session narrows to that session's own turns.
 */
export async function listHistory(ctx: Ctx, organizationId: string, params: HistoryFilters) {
  const { appId, profileId, sessionId, userId, historyId } = params;
  if ([appId, profileId, sessionId, userId, historyId].every((f) => f === undefined)) {
    throw new BadRequestError('history/list needs at least one filter: appId, profileId, sessionId, userId or historyId.');
  }
  let q = ctx.db.selectFrom('history').selectAll().where('organizationId', '=', organizationId);
  const app = appId !== undefined ? await findApp(ctx.db, organizationId, appId) : undefined;
  if (app) q = q.where('appId', '=', app.id);
  else {
    const liveApps = ctx.db.selectFrom('apps').select('id').where('organizationId', '=', organizationId).where('status', '=', 'active');
    q = q.where('appId', 'in', liveApps);
  }
  if (profileId !== undefined) {
    const profile = await findProfile(ctx.db, organizationId, profileId, { appId: app?.id });
    q = q.where('profileId', '=', profile.id);
  }
  if (sessionId !== undefined) {
    q = q.where('sessionId', '=', sessionId);
    // A session id freed by a delete may be taken again, by another user even: the session
    // that holds the id now shows only its own turns, not those of the one deleted before.
    const session = await ctx.db.selectFrom('sessions').select('createdAt').where('organizationId', '=', organizationId).where('id', '=', sessionId).executeTakeFirst();
    if (session) {
      const ownTurns = ctx.db
        .selectFrom('instances')
        .select('id')
        .where('organizationId', '=', organizationId)
        .where('sessionId', '=', sessionId)
        .where('createdAt', '>=', session.createdAt);
      q = q.where('instanceId', 'in', ownTurns);
    }
  }
  if (userId !== undefined) q = q.where('userId', '=', userId);
  if (historyId !== undefined) q = q.where('id', '=', historyId);
  return paginate(q, params, newestFirst, historyView);
}
