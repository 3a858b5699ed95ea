import type { Ctx } from './context.js';
import { BadRequestError, NotFoundError } from './errors.js';
import { newId } from './ids.js';
import { findApp } from './apps.js';
import { paginate, type PageParams } from './pagination.js';
import type { Signal } from './events.js';
import { profileDeletingHooks } from './profiles.js';
import { stopOpenTurns } from './runs.js';
import type { Db, Tx } from '../storage/db.js';
import type { Session } from '../storage/schema.js';

/**
 * `single`: one profile's conversation. `group`: shared by every profile of an openclaw
 * app (its `profileId` stays null). Session ids are unique per organization and may be any
 * caller string, because `response/run` names sessions freely.
 */
export type SessionType = 'single' | 'group';

export function sessionView(s: Session) {
  return {
    id: s.id,
    appId: s.appId,
    type: s.type,
    profileId: s.profileId,
    lastInstanceId: s.lastInstanceId,
    turns: s.turns,
    createdAt: s.createdAt.toISOString(),
    lastActiveAt: s.lastActiveAt.toISOString(),
  };
}

/** A session of this organization's active apps, by its id verbatim. */
export async function findSession(db: Db, organizationId: string, id: string): Promise<Session> {
  const session = await db
    .selectFrom('sessions')
    .innerJoin('apps', 'apps.id', 'sessions.appId')
    .selectAll('sessions')
    .where('sessions.organizationId', '=', organizationId)
    .where('sessions.id', '=', id)
    .where('apps.status', '=', 'active')
    .executeTakeFirst();
  if (!session) throw new NotFoundError('session', id);
  return session;
}

export async function createSession(ctx: Ctx, organizationId: string, input: { appId: string; type: SessionType }): Promise<Session> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  // Claude Code keeps one conversation per working directory, i.e. per profile.
  if (app.type === 'claude' && input.type !== 'single') {
    throw new BadRequestError(`claude apps support only single sessions; "${input.type}" sessions need an openclaw app.`, [
      { field: 'body.type', message: 'must be "single" for claude apps' },
    ]);
  }
  const now = ctx.now();
  return ctx.db
    .insertInto('sessions')
    .values({
      id: newId('session'),
      organizationId,
      appId: app.id,
      type: input.type,
      profileId: null,
      lastInstanceId: null,
      turns: 0,
      createdAt: now,
      lastActiveAt: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function listSessions(ctx: Ctx, organizationId: string, params: PageParams & { appId: string }) {
  const app = await findApp(ctx.db, organizationId, params.appId);
  const q = ctx.db.selectFrom('sessions').selectAll().where('organizationId', '=', organizationId).where('appId', '=', app.id);
  return paginate(q, params, (q) => q.orderBy('createdAt', 'desc').orderBy('id', 'desc'), sessionView);
}

/**
 * A profile being deleted loses its own sessions at once, as deleteSession removes one: so
 * the same user's next run (a new profile) starts a new conversation under the same session
 * id instead of being refused as "another user's". Group sessions are shared: they stay.
 */
async function closeProfileSessions(ctx: Ctx, tx: Tx, signal: Signal, profileId: string): Promise<void> {
  await stopOpenTurns(ctx, tx, signal, { profileId });
  await tx.deleteFrom('sessions').where('profileId', '=', profileId).where('type', '=', 'single').execute();
}
profileDeletingHooks.push(closeProfileSessions);

/**
 * Deletes a session and its conversation (transcripts cascade). Its turns go with it: queued
 * ones end `stopped` at once, running ones are told to stop (as `response/stop` does), so no
 * turn of it runs later under a new session that reuses the id (resolveSession refuses the
 * id while one is still stopping). Its ended instances and history stay, as records of what ran
 * (listed by profile or app; a new session of the id lists only its own, see listHistory).
 */
export async function deleteSession(ctx: Ctx, organizationId: string, id: string): Promise<{ id: string; deleted: true }> {
  const session = await findSession(ctx.db, organizationId, id);
  await ctx.events.transaction(async (tx, signal) => {
    const locked = await tx.selectFrom('sessions').select('id').where('organizationId', '=', organizationId).where('id', '=', session.id).forUpdate().executeTakeFirst();
    if (!locked) return; // deleted meanwhile
    await stopOpenTurns(ctx, tx, signal, { organizationId, sessionId: session.id });
    await tx.deleteFrom('sessions').where('organizationId', '=', organizationId).where('id', '=', session.id).execute();
  });
  return { id: session.id, deleted: true };
}
