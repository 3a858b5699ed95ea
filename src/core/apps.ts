import { appCache } from './app-cache.js';
import type { Ctx } from './context.js';
import { BadRequestError, ConflictError, NotFoundError } from './errors.js';
import { newId } from './ids.js';
import { mask } from './secrets.js';
import type { Db } from '../storage/db.js';
import { isUniqueViolation } from '../storage/pg-errors.js';
import type { App } from '../storage/schema.js';
import { paginate, type PageParams } from './pagination.js';
import { purgeAppFiles } from './gc.js';
import { assertPublicUrl } from './url-guard.js';

export type AppType = 'claude' | 'openclaw';
export type LimitInterval = 'daily' | 'monthly' | 'yearly';

export interface Credential {
  type: 'static_bearer';
  mcp_server_url: string;
  token: string;
}

export interface CreateAppInput {
  slug: string;
  type: AppType;
  name?: string;
  limit?: { amount: number; interval: LimitInterval; name?: string; message?: string };
  credentials?: Credential[];
  returnIfExist?: boolean;
}

export const DEFAULT_LIMIT_MESSAGE = 'You have reached your usage limit for this period.';

export function appView(ctx: Pick<Ctx, 'secrets'>, app: App) {
  const credentials = app.credentials ? ctx.secrets.decryptJson<Credential[]>(app.credentials) : [];
  return {
    id: app.id,
    slug: app.slug,
    name: app.name,
    type: app.type,
    headVersionId: app.headVersionId,
    defaultAccessGroupId: app.defaultAccessGroupId,
    credentials: credentials.map((c) => ({ type: c.type, mcp_server_url: c.mcp_server_url, token: mask(c.token) })),
    status: app.status,
    createdAt: app.createdAt.toISOString(),
    updatedAt: app.updatedAt.toISOString(),
  };
}

export type AppView = ReturnType<typeof appView>;

/** `GET /v1/app/{id}`: the app's view, as `findApp` with `includeDeleting` finds it, from the app cache when it can. */
export async function getApp(ctx: Pick<Ctx, 'db' | 'events' | 'secrets'>, organizationId: string, ref: string): Promise<AppView> {
  return appCache(ctx.events).get(organizationId, ref, async () => appView(ctx, await findApp(ctx.db, organizationId, ref, { includeDeleting: true })));
}

/** Call once a write to an organization's app rows has committed: this process's next read sees it. */
export function appsChanged(ctx: Pick<Ctx, 'events'>, organizationId: string): void {
  appCache(ctx.events).forget(organizationId);
}

/**
 * An app of this organization by display id or slug. Deleting apps are found only when
 * `includeDeleting` (their GET shows `status: deleting`); everything else treats them as gone.
 */
export async function findApp(db: Db, organizationId: string, ref: string, opts: { includeDeleting?: boolean } = {}): Promise<App> {
  let q = db
    .selectFrom('apps')
    .selectAll()
    .where('organizationId', '=', organizationId)
    .where((eb) => eb.or([eb('id', '=', ref), eb('slug', '=', ref)]));
  if (!opts.includeDeleting) q = q.where('status', '=', 'active');
  // An id match wins over a slug match; an active app over a deleting one with the same slug.
  const rows = await q.execute();
  const app =
    rows.find((a) => a.id === ref) ?? rows.find((a) => a.status === 'active') ?? rows.find(() => true);
  if (!app) throw new NotFoundError('app', ref);
  return app;
}

async function findActiveBySlug(db: Db, organizationId: string, slug: string): Promise<App | undefined> {
  return db
    .selectFrom('apps')
    .selectAll()
    .where('organizationId', '=', organizationId)
    .where('slug', '=', slug)
    .where('status', '=', 'active')
    .executeTakeFirst();
}

/**
 * Every run connects to each credential's MCP server with its token, so the server must pass
 * the private-address guard, as webhooks do (the runtime checks again before each turn).
 */
async function assertPublicMcpServers(ctx: Pick<Ctx, 'config'>, credentials: Credential[]): Promise<void> {
  for (const [i, credential] of credentials.entries()) {
    try {
      await assertPublicUrl(ctx.config, credential.mcp_server_url);
    } catch (err) {
      if (!(err instanceof BadRequestError)) throw err;
      const field = `body.credentials.${i}.mcp_server_url`;
      throw new BadRequestError(`${field}: ${err.message} Give the MCP server's public URL.`, [{ field, message: err.message }]);
    }
  }
}

export async function createApp(ctx: Ctx, organizationId: string, input: CreateAppInput): Promise<App> {
  await assertPublicMcpServers(ctx, input.credentials ?? []);
  const existing = await findActiveBySlug(ctx.db, organizationId, input.slug);
  if (existing) {
    if (input.returnIfExist) return existing;
    throw new ConflictError(`An app with slug "${input.slug}" already exists; pick another slug or send returnIfExist.`, 'slug_taken');
  }
  const appId = newId('app');
  const groupId = newId('accessGroup');
  const now = ctx.now();
  try {
    const created = await ctx.db.transaction().execute(async (tx) => {
      const app = await tx
        .insertInto('apps')
        .values({
          id: appId,
          organizationId,
          slug: input.slug,
          name: input.name ?? input.slug,
          type: input.type,
          headVersionId: null,
          defaultAccessGroupId: groupId,
          credentials: input.credentials?.length ? ctx.secrets.encryptJson(input.credentials) : null,
          createdAt: now,
          updatedAt: now,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      await tx
        .insertInto('accessGroups')
        .values({
          id: groupId,
          organizationId,
          appId,
          name: input.limit?.name ?? 'Default',
          limit: input.limit ? input.limit.amount : null,
          limitReset: input.limit?.interval ?? 'monthly',
          limitMessage: input.limit ? (input.limit.message ?? DEFAULT_LIMIT_MESSAGE) : null,
          isDefault: true,
          createdAt: now,
          updatedAt: now,
        })
        .execute();
      return app;
    });
    appsChanged(ctx, organizationId);
    return created;
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    // Lost a race for the slug: behave as if we had seen it first.
    const winner = await findActiveBySlug(ctx.db, organizationId, input.slug);
    if (winner && input.returnIfExist) return winner;
    throw new ConflictError(`An app with slug "${input.slug}" already exists; pick another slug or send returnIfExist.`, 'slug_taken');
  }
}

export async function updateApp(ctx: Ctx, organizationId: string, ref: string, input: { slug?: string; name?: string }): Promise<App> {
  const app = await findApp(ctx.db, organizationId, ref);
  if (input.slug === undefined && input.name === undefined) return app;
  try {
    const updated = await ctx.db
      .updateTable('apps')
      .set({ ...(input.slug !== undefined ? { slug: input.slug } : {}), ...(input.name !== undefined ? { name: input.name } : {}), updatedAt: ctx.now() })
      .where('id', '=', app.id)
      .returningAll()
      .executeTakeFirstOrThrow();
    appsChanged(ctx, organizationId);
    return updated;
  } catch (err) {
    if (isUniqueViolation(err)) throw new ConflictError(`An app with slug "${input.slug}" already exists.`, 'slug_taken');
    throw err;
  }
}

export async function listApps(ctx: Ctx, organizationId: string, params: PageParams & { appId?: string }) {
  let q = ctx.db.selectFrom('apps').selectAll().where('organizationId', '=', organizationId).where('status', '=', 'active');
  // An unknown appId is a 404 here as anywhere else (CONTRACT §9), not an empty page.
  if (params.appId !== undefined) q = q.where('id', '=', (await findApp(ctx.db, organizationId, params.appId)).id);
  return paginate(q, params, (q) => q.orderBy('createdAt', 'desc').orderBy('id', 'desc'), (a) => appView(ctx, a));
}

/** Marks the app `deleting` and queues the job that removes everything under it. */
export async function deleteApp(ctx: Ctx, organizationId: string, ref: string): Promise<{ id: string; status: 'deleting' }> {
  const app = await findApp(ctx.db, organizationId, ref, { includeDeleting: true });
  if (app.status === 'active') {
    await ctx.db.transaction().execute(async (tx) => {
      const moved = await tx
        .updateTable('apps')
        .set({ status: 'deleting', updatedAt: ctx.now() })
        .where('id', '=', app.id)
        .where('status', '=', 'active')
        .executeTakeFirst();
      if (moved.numUpdatedRows > 0n) await ctx.queue.send('delete-app', { appId: app.id }, { tx });
    });
    appsChanged(ctx, organizationId);
  }
  return { id: app.id, status: 'deleting' };
}

/** Hooks other subsystems add to app deletion (versions, blobs, ...), run before the rows go. */
export const appDeletionSteps: ((ctx: Ctx, appId: string) => Promise<void>)[] = [];
appDeletionSteps.push(purgeAppFiles);

/** The delete-app job: idempotent, resumable, in batches so a huge app never holds one long lock. */
export async function purgeApp(ctx: Ctx, appId: string): Promise<void> {
  const app = await ctx.db.selectFrom('apps').select(['id', 'organizationId', 'status']).where('id', '=', appId).executeTakeFirst();
  if (!app || app.status !== 'deleting') return;
  for (const step of appDeletionSteps) await step(ctx, appId);
  for (;;) {
    const batch = await ctx.db.selectFrom('profiles').select('id').where('appId', '=', appId).limit(1000).execute();
    if (batch.length === 0) break;
    await ctx.db.deleteFrom('profiles').where('id', 'in', batch.map((p) => p.id)).execute();
  }
  await ctx.db.deleteFrom('apps').where('id', '=', appId).execute();
  appsChanged(ctx, app.organizationId);
}

export function assertAppType(app: App, allowed: AppType[], what: string): void {
  if (!allowed.includes(app.type)) throw new BadRequestError(`${what} is not available for ${app.type} apps.`);
}

