import type { Ctx } from './context.js';
import type { Signal } from './events.js';
import { ConflictError, NotFoundError } from './errors.js';
import { newId } from './ids.js';
import { findApp } from './apps.js';
import { findAccessGroup, lockAccessGroup } from './access-groups.js';
import { paginate, type PageParams } from './pagination.js';
import { createInitialState } from './profile-init.js';
import { purgeProfileFiles } from './gc.js';
import { usageOf, type Usage } from './usage.js';
import type { Db, Tx } from '../storage/db.js';
import { isUniqueViolation } from '../storage/pg-errors.js';
import type { AccessGroup, App, Profile } from '../storage/schema.js';

export function profileView(p: Profile, usage: Usage) {
  return {
    id: p.id,
    appId: p.appId,
    identifier: p.identifier,
    accessGroupId: p.accessGroupId,
    metadata: (p.metadata ?? null) as Record<string, unknown> | null,
    headStateId: p.headStateId,
    baseVersionId: p.baseVersionId,
    usage,
    status: p.status,
    createdAt: p.createdAt.toISOString(),
    updatedAt: p.updatedAt.toISOString(),
  };
}

export type ProfileView = ReturnType<typeof profileView>;

async function groupsOf(db: Db, ids: string[]): Promise<Map<string, Pick<AccessGroup, 'limit' | 'limitReset'>>> {
  if (ids.length === 0) return new Map();
  const rows = await db.selectFrom('accessGroups').select(['id', 'limit', 'limitReset']).where('id', 'in', [...new Set(ids)]).execute();
  return new Map(rows.map((g) => [g.id, g]));
}

/** Views with usage for many profiles, in two queries. */
export async function profileViews(ctx: Ctx, profiles: Profile[]): Promise<ProfileView[]> {
  const groups = await groupsOf(ctx.db, profiles.map((p) => p.accessGroupId));
  const usage = await usageOf(ctx.db, profiles, groups, ctx.now());
  return profiles.map((p) => profileView(p, usage.get(p.id)!));
}

export async function describeProfile(ctx: Ctx, profile: Profile): Promise<ProfileView> {
  return (await profileViews(ctx, [profile]))[0];
}

/**
 * A profile of this organization. Without `appRef`, `ref` is a display id; with it, `ref` is
 * a display id or an identifier within that app. Deleting profiles only with `includeDeleting`.
 */
export async function findProfile(
  db: Db,
  organizationId: string,
  ref: string,
  opts: { appId?: string; includeDeleting?: boolean } = {},
): Promise<Profile> {
  let q = db.selectFrom('profiles').selectAll().where('organizationId', '=', organizationId);
  if (opts.appId) q = q.where('appId', '=', opts.appId).where((eb) => eb.or([eb('id', '=', ref), eb('identifier', '=', ref)]));
  else q = q.where('id', '=', ref);
  if (!opts.includeDeleting) q = q.where('status', '=', 'active');
  const rows = await q.execute();
  const profile = rows.find((p) => p.id === ref) ?? rows.find((p) => p.status === 'active') ?? rows[0];
  if (!profile) throw new NotFoundError('profile', ref);
  if (!opts.appId) {
    // The profile's app must itself be alive.
    const app = await db.selectFrom('apps').select('status').where('id', '=', profile.appId).executeTakeFirst();
    if (!app || app.status !== 'active') throw new NotFoundError('profile', ref);
  }
  return profile;
}

export interface CreateProfileInput {
  appId: string;
  identifier: string;
  accessGroupId?: string;
  metadata?: Record<string, unknown> | null;
  returnIfExist?: boolean;
}

/** Hooks run in the creating transaction (e.g. queue profile.created webhooks). */
export const profileCreatedHooks: ((ctx: Ctx, tx: Tx, profile: Profile) => Promise<void>)[] = [];

async function activeByIdentifier(db: Db, appId: string, identifier: string): Promise<Profile | undefined> {
  return db
    .selectFrom('profiles')
    .selectAll()
    .where('appId', '=', appId)
    .where('identifier', '=', identifier)
    .where('status', '=', 'active')
    .executeTakeFirst();
}

/** Inserts a profile (and its first state) for an app already looked up. */
export async function insertProfile(
  ctx: Ctx,
  app: App,
  input: { identifier: string; accessGroupId?: string; metadata?: Record<string, unknown> | null },
): Promise<Profile> {
  const id = newId('profile');
  const now = ctx.now();
  return ctx.db.transaction().execute(async (tx) => {
    // Lock the app row so a concurrent first version cannot miss this profile.
    const locked = await tx.selectFrom('apps').select('headVersionId').where('id', '=', app.id).forUpdate().executeTakeFirstOrThrow();
    if (input.accessGroupId !== undefined) await lockAccessGroup(tx, input.accessGroupId, app.id);
    await tx
      .insertInto('profiles')
      .values({
        id,
        organizationId: app.organizationId,
        appId: app.id,
        identifier: input.identifier,
        accessGroupId: input.accessGroupId ?? app.defaultAccessGroupId!,
        metadata: input.metadata == null ? null : JSON.stringify(input.metadata),
        createdAt: now,
        updatedAt: now,
      })
      .execute();
    const head = await createInitialState(ctx, tx, { id, organizationId: app.organizationId, appId: app.id }, locked.headVersionId);
    if (head) {
      await tx.updateTable('profiles').set({ ...head, headSeq: 1 }).where('id', '=', id).execute();
    }
    const profile = await tx.selectFrom('profiles').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    for (const hook of profileCreatedHooks) await hook(ctx, tx, profile);
    return profile;
  });
}

export async function createProfile(ctx: Ctx, organizationId: string, input: CreateProfileInput): Promise<Profile> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  if (input.accessGroupId !== undefined) await findAccessGroup(ctx.db, organizationId, input.accessGroupId, app.id);
  const existing = await activeByIdentifier(ctx.db, app.id, input.identifier);
  const taken = () => new ConflictError(`A profile with identifier "${input.identifier}" already exists in this app; send returnIfExist to get it.`);
  if (existing) {
    if (input.returnIfExist) return existing;
    throw taken();
  }
  try {
    return await insertProfile(ctx, app, input);
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    const winner = await activeByIdentifier(ctx.db, app.id, input.identifier);
    if (winner && input.returnIfExist) return winner;
    throw taken();
  }
}

export async function listProfiles(ctx: Ctx, organizationId: string, params: PageParams & { appId: string }) {
  const app = await findApp(ctx.db, organizationId, params.appId);
  const q = ctx.db.selectFrom('profiles').selectAll().where('appId', '=', app.id).where('status', '=', 'active');
  const result = await paginate(q, params, (q) => q.orderBy('createdAt', 'desc').orderBy('id', 'desc'), (p) => p);
  return { ...result, items: await profileViews(ctx, result.items) };
}

export interface UpdateProfileInput {
  identifier?: string;
  accessGroupId?: string;
  metadata?: Record<string, unknown> | null;
}

export async function updateProfile(ctx: Ctx, organizationId: string, ref: string, input: UpdateProfileInput, appRef?: string): Promise<Profile> {
  const appId = appRef ? (await findApp(ctx.db, organizationId, appRef)).id : undefined;
  const profile = await findProfile(ctx.db, organizationId, ref, { appId });
  if (input.identifier === undefined && input.accessGroupId === undefined && input.metadata === undefined) return profile;
  try {
    return await ctx.db.transaction().execute(async (tx) => {
      // The group must be of the profile's app (so of this organization), checked and locked in one.
      if (input.accessGroupId !== undefined) await lockAccessGroup(tx, input.accessGroupId, profile.appId);
      return tx
        .updateTable('profiles')
        .set({
          ...(input.identifier !== undefined ? { identifier: input.identifier } : {}),
          ...(input.accessGroupId !== undefined ? { accessGroupId: input.accessGroupId } : {}),
          ...(input.metadata !== undefined ? { metadata: input.metadata === null ? null : JSON.stringify(input.metadata) } : {}),
          updatedAt: ctx.now(),
        })
        .where('id', '=', profile.id)
        .returningAll()
        .executeTakeFirstOrThrow();
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw new ConflictError(`A profile with identifier "${input.identifier}" already exists in this app.`);
    throw err;
  }
}

export async function deleteProfile(ctx: Ctx, organizationId: string, ref: string, appRef?: string): Promise<{ id: string; status: 'deleting' }> {
  const appId = appRef ? (await findApp(ctx.db, organizationId, appRef)).id : undefined;
  const profile = await findProfile(ctx.db, organizationId, ref, { appId, includeDeleting: true });
  if (profile.status === 'active') {
    await ctx.events.transaction(async (tx, signal) => {
      const moved = await tx
        .updateTable('profiles')
        .set({ status: 'deleting', updatedAt: ctx.now() })
        .where('id', '=', profile.id)
        .where('status', '=', 'active')
        .executeTakeFirst();
      if (moved.numUpdatedRows === 0n) return;
      for (const hook of profileDeletingHooks) await hook(ctx, tx, signal, profile.id);
      await ctx.queue.send('delete-profile', { profileId: profile.id }, { tx });
    });
  }
  return { id: profile.id, status: 'deleting' };
}

/**
 * Steps other subsystems add to a profile's deletion request, in its transaction: what must
 * end at once rather than in the job (its sessions, so the user's next run starts afresh).
 */
export const profileDeletingHooks: ((ctx: Ctx, tx: Tx, signal: Signal, profileId: string) => Promise<void>)[] = [];

/** Steps other subsystems add to profile deletion (states, blobs, sessions, ...). */
export const profileDeletionSteps: ((ctx: Ctx, profileId: string) => Promise<void>)[] = [];
profileDeletionSteps.push(purgeProfileFiles);

/** The delete-profile job: idempotent; a re-run after a crash finishes the work. */
export async function purgeProfile(ctx: Ctx, profileId: string): Promise<void> {
  const profile = await ctx.db.selectFrom('profiles').select(['id', 'status']).where('id', '=', profileId).executeTakeFirst();
  if (!profile || profile.status !== 'deleting') return;
  for (const step of profileDeletionSteps) await step(ctx, profileId);
  // Webhook deliveries about the profile carry its data; pending ones are never sent.
  await ctx.db.deleteFrom('webhookDeliveries').where('profileId', '=', profileId).execute();
  await ctx.db.deleteFrom('sessions').where('profileId', '=', profileId).where('type', '=', 'single').execute();
  await ctx.db.deleteFrom('profiles').where('id', '=', profileId).execute();
}
