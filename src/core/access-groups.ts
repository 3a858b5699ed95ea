import type { Ctx } from './context.js';
import { BadRequestError, NotFoundError } from './errors.js';
import { newId } from './ids.js';
import { findApp, type LimitInterval, DEFAULT_LIMIT_MESSAGE } from './apps.js';
import { paginate, type PageParams } from './pagination.js';
import type { Db, Tx } from '../storage/db.js';
import type { AccessGroup } from '../storage/schema.js';

export function accessGroupView(g: AccessGroup) {
  return {
    id: g.id,
    appId: g.appId,
    name: g.name,
    limit: g.limit,
    limitReset: g.limitReset,
    limitMessage: g.limitMessage,
    isDefault: g.isDefault,
    createdAt: g.createdAt.toISOString(),
    updatedAt: g.updatedAt.toISOString(),
  };
}

/** A group of this organization's active apps, optionally required to be of `appId`. */
export async function findAccessGroup(db: Db, organizationId: string, id: string, appId?: string): Promise<AccessGroup> {
  const group = await db
    .selectFrom('accessGroups')
    .innerJoin('apps', 'apps.id', 'accessGroups.appId')
    .selectAll('accessGroups')
    .where('accessGroups.id', '=', id)
    .where('accessGroups.organizationId', '=', organizationId)
    .where('apps.status', '=', 'active')
    .executeTakeFirst();
  if (!group || (appId !== undefined && group.appId !== appId)) throw new NotFoundError('access group', id);
  return group;
}

/**
 * In a transaction that puts a profile in group `id`: the group still exists, and it stays
 * until the transaction ends (its row is share-locked). A deletion of the group waits, then
 * moves this profile to the default group with the others; or it came first, and this is a
 * 404, so no profile is ever left on a deleted group.
 */
export async function lockAccessGroup(tx: Tx, id: string, appId: string): Promise<void> {
  const row = await tx.selectFrom('accessGroups').select('id').where('id', '=', id).where('appId', '=', appId).forShare().executeTakeFirst();
  if (!row) throw new NotFoundError('access group', id);
}

export interface CreateAccessGroupInput {
  appId: string;
  name: string;
  limit: number;
  limitReset: LimitInterval;
  limitMessage?: string;
}

export async function createAccessGroup(ctx: Ctx, organizationId: string, input: CreateAccessGroupInput): Promise<AccessGroup> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  const now = ctx.now();
  return ctx.db
    .insertInto('accessGroups')
    .values({
      id: newId('accessGroup'),
      organizationId,
      appId: app.id,
      name: input.name,
      limit: input.limit,
      limitReset: input.limitReset,
      limitMessage: input.limitMessage ?? DEFAULT_LIMIT_MESSAGE,
      isDefault: false,
      createdAt: now,
      updatedAt: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function listAccessGroups(ctx: Ctx, organizationId: string, params: PageParams & { appId: string }) {
  const app = await findApp(ctx.db, organizationId, params.appId);
  const q = ctx.db.selectFrom('accessGroups').selectAll().where('appId', '=', app.id);
  return paginate(q, params, (q) => q.orderBy('createdAt', 'desc').orderBy('id', 'desc'), accessGroupView);
}

export interface UpdateAccessGroupInput {
  name?: string;
  limit?: number | null;
  limitReset?: LimitInterval;
  limitMessage?: string | null;
}

export async function updateAccessGroup(ctx: Ctx, organizationId: string, id: string, input: UpdateAccessGroupInput): Promise<AccessGroup> {
  const group = await findAccessGroup(ctx.db, organizationId, id);
  const patch = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined));
  if (Object.keys(patch).length === 0) return group;
  if (patch.limit !== null && patch.limit !== undefined && group.limitMessage === null && input.limitMessage === undefined) {
    // A group that becomes limited needs something to tell over-limit users.
    patch.limitMessage = DEFAULT_LIMIT_MESSAGE;
  }
  return ctx.db
    .updateTable('accessGroups')
    .set({ ...patch, updatedAt: ctx.now() })
    .where('id', '=', group.id)
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** Deletes a non-default group; its profiles move to the app's default group. */
export async function deleteAccessGroup(ctx: Ctx, organizationId: string, id: string): Promise<{ id: string; deleted: true }> {
  const group = await findAccessGroup(ctx.db, organizationId, id);
  if (group.isDefault) throw new BadRequestError("The app's default access group cannot be deleted.");
  await ctx.db.transaction().execute(async (tx) => {
    // Locked first: a profile being put in this group meanwhile (lockAccessGroup) is moved too.
    const still = await tx.selectFrom('accessGroups').select('id').where('id', '=', group.id).forUpdate().executeTakeFirst();
    if (!still) throw new NotFoundError('access group', group.id);
    const app = await tx.selectFrom('apps').select('defaultAccessGroupId').where('id', '=', group.appId).executeTakeFirstOrThrow();
    await tx
      .updateTable('profiles')
      .set({ accessGroupId: app.defaultAccessGroupId!, updatedAt: ctx.now() })
      .where('accessGroupId', '=', group.id)
      .execute();
    await tx.deleteFrom('accessGroups').where('id', '=', group.id).execute();
  });
  return { id: group.id, deleted: true };
}
