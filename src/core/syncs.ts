import type { Ctx } from './context.js';
import { ConflictError, NotFoundError } from './errors.js';
import { newId } from './ids.js';
import { findApp } from './apps.js';
import { startNextSync } from '../sync/job.js';
import type { Strategy } from '../sync/merge/index.js';
import type { Sync } from '../storage/schema.js';

export interface CreateSyncInput {
  appId: string;
  strategy?: Strategy;
  profileIds?: string[];
}

/**
 * `version/sync`: records a queued sync of the app head version and queues its start (or
 * leaves it queued behind the app's running sync). Unknown profile ids → 404, nothing queued.
 */
export async function createSync(ctx: Ctx, organizationId: string, input: CreateSyncInput): Promise<Sync> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  if (!app.headVersionId) throw new ConflictError('The app has no head version yet; upload a version first.', 'no_head_version');
  const profileIds = input.profileIds ? [...new Set(input.profileIds)] : undefined;
  if (profileIds) {
    const found = new Set<string>();
    for (let i = 0; i < profileIds.length; i += 1000) {
      const rows = await ctx.db
        .selectFrom('profiles')
        .select('id')
        .where('appId', '=', app.id)
        .where('status', '=', 'active')
        .where('id', 'in', profileIds.slice(i, i + 1000))
        .execute();
      for (const r of rows) found.add(r.id);
    }
    const missing = profileIds.find((id) => !found.has(id));
    if (missing) throw new NotFoundError('profile', missing);
  }
  return ctx.db.transaction().execute(async (tx) => {
    // The app row lock orders this against a finishing sync choosing the next one to start.
    const locked = await tx.selectFrom('apps').select(['headVersionId']).where('id', '=', app.id).forUpdate().executeTakeFirstOrThrow();
    const sync = await tx
      .insertInto('syncs')
      .values({
        id: newId('sync'),
        organizationId,
        appId: app.id,
        versionId: locked.headVersionId ?? app.headVersionId!,
        strategy: input.strategy ?? 'smart',
        status: 'queued',
        profileIds: profileIds ? JSON.stringify(profileIds) : null,
        error: null,
        startedAt: null,
        completedAt: null,
        createdAt: ctx.now(),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    const ahead = await tx
      .selectFrom('syncs')
      .select('id')
      .where('appId', '=', app.id)
      .where('id', '!=', sync.id)
      .where('status', 'in', ['queued', 'running'])
      .executeTakeFirst();
    if (!ahead) await startNextSync(ctx, tx, app.id);
    return sync;
  });
}
