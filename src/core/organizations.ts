import type { Ctx } from './context.js';
import { ConflictError, NotFoundError } from './errors.js';
import { newId } from './ids.js';
import { insertKey } from './keys.js';
import { newApiKey } from './secrets.js';
import { isUniqueViolation } from '../storage/pg-errors.js';
import type { Organization } from '../storage/schema.js';

export function organizationView(o: Organization) {
  return { id: o.id, slug: o.slug, name: o.name, createdAt: o.createdAt.toISOString(), updatedAt: o.updatedAt.toISOString() };
}

function slugTaken(slug: string): ConflictError {
  return new ConflictError(`The organization slug "${slug}" is taken; pick another.`, 'slug_taken');
}

/**
 * Creates an organization owned by the calling user and a first organization key (shown
 * once). `returnIfExist` returns the caller's own organization with that slug, without a key.
 */
export async function createOrganization(
  ctx: Ctx,
  userId: string,
  input: { name: string; slug: string; returnIfExist?: boolean },
): Promise<{ organization: Organization; apiKey?: string }> {
  const existing = await ctx.db.selectFrom('organizations').selectAll().where('slug', '=', input.slug).executeTakeFirst();
  if (existing) {
    if (input.returnIfExist && existing.ownerUserId === userId) return { organization: existing };
    throw slugTaken(input.slug);
  }
  const id = newId('organization');
  const apiKey = newApiKey();
  const now = ctx.now();
  try {
    const organization = await ctx.db.transaction().execute(async (tx) => {
      const org = await tx
        .insertInto('organizations')
        .values({ id, slug: input.slug, name: input.name, ownerUserId: userId, createdAt: now, updatedAt: now })
        .returningAll()
        .executeTakeFirstOrThrow();
      await insertKey(tx, apiKey, { kind: 'organization', organizationId: id });
      return org;
    });
    return { organization, apiKey };
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    const winner = await ctx.db.selectFrom('organizations').selectAll().where('slug', '=', input.slug).executeTakeFirst();
    if (winner && input.returnIfExist && winner.ownerUserId === userId) return { organization: winner };
    throw slugTaken(input.slug);
  }
}

/** Organizations are reached by id or slug, and only by their owner. */
export async function updateOrganization(
  ctx: Ctx,
  userId: string,
  ref: string,
  input: { name?: string; slug?: string },
): Promise<Organization> {
  const org = await ctx.db
    .selectFrom('organizations')
    .selectAll()
    .where('ownerUserId', '=', userId)
    .where((eb) => eb.or([eb('id', '=', ref), eb('slug', '=', ref)]))
    .executeTakeFirst();
  if (!org) throw new NotFoundError('organization', ref);
  if (input.name === undefined && input.slug === undefined) return org;
  try {
    return await ctx.db
      .updateTable('organizations')
      .set({ ...(input.name !== undefined ? { name: input.name } : {}), ...(input.slug !== undefined ? { slug: input.slug } : {}), updatedAt: ctx.now() })
      .where('id', '=', org.id)
      .returningAll()
      .executeTakeFirstOrThrow();
  } catch (err) {
    if (isUniqueViolation(err)) throw slugTaken(input.slug!);
    throw err;
  }
}
