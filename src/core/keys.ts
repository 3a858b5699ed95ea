import type { Ctx } from './context.js';
import { ForbiddenError, UnauthorizedError } from './errors.js';
import { newId } from './ids.js';
import { newApiKey, sha256Hex } from './secrets.js';
import type { Db } from '../storage/db.js';

export type Principal = { kind: 'user'; userId: string } | { kind: 'organization'; organizationId: string };

/**
 * What an API key looks like: `dk-` and up to 256 visible ASCII characters. Keys this server
 * makes are `dk-` and 40 base62 characters; an operator's HARNESSLAYER_USER_KEY may be any
 * such string (`dk-ops-key-1`). Keys are looked up by hash, so the form only screens out
 * what cannot be a key.
 */
const KEY_PATTERN = /^dk-[\x21-\x7e]{1,256}$/;

export function hashKey(key: string): string {
  return sha256Hex(key);
}

/**
 * Key hash → owner, per database, so most requests skip one round trip. A key's owner never
 * changes and keys are never revoked, so a hit is always right; the TTL bounds how long a
 * revocation would lag if one is ever added (it must then clear this). Unknown keys are not
 * kept: a key created by another process works at once, and junk keys cannot fill memory.
 */
const PRINCIPAL_TTL_MS = 30_000;
const PRINCIPAL_CACHE_MAX = 10_000;
const principals = new WeakMap<Db, Map<string, { principal: Principal; expires: number }>>();

/**
 * Resolves an `Authorization: Bearer dk-...` header to its owner and the stored hash of the
 * key (the same key however the header spells "Bearer" or spaces it), or throws 401.
 */
export async function authenticate(db: Db, header: string | undefined): Promise<{ principal: Principal; keyHash: string }> {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!match || !KEY_PATTERN.test(match[1])) throw new UnauthorizedError();
  const keyHash = hashKey(match[1]);
  let cache = principals.get(db);
  if (!cache) principals.set(db, (cache = new Map()));
  const hit = cache.get(keyHash);
  if (hit && hit.expires > Date.now()) return { principal: hit.principal, keyHash };
  const row = await db.selectFrom('apiKeys').select(['kind', 'userId', 'organizationId']).where('keyHash', '=', keyHash).executeTakeFirst();
  let principal: Principal;
  if (row?.kind === 'user' && row.userId) principal = { kind: 'user', userId: row.userId };
  else if (row?.kind === 'organization' && row.organizationId) principal = { kind: 'organization', organizationId: row.organizationId };
  else throw new UnauthorizedError();
  cache.delete(keyHash);
  if (cache.size >= PRINCIPAL_CACHE_MAX) cache.delete(cache.keys().next().value!);
  cache.set(keyHash, { principal, expires: Date.now() + PRINCIPAL_TTL_MS });
  return { principal, keyHash };
}

export function requireUser(p: Principal): string {
  if (p.kind !== 'user') throw new ForbiddenError('Organization endpoints take a user API key; this is an organization API key.');
  return p.userId;
}

export function requireOrganization(p: Principal): string {
  if (p.kind !== 'organization') {
    throw new ForbiddenError('This endpoint takes an organization API key; this is a user API key (it may only call /v1/organization/*).');
  }
  return p.organizationId;
}

/** Stores a key's hash; the key itself is returned once and never again. */
export async function insertKey(db: Db, key: string, owner: Principal): Promise<void> {
  await db
    .insertInto('apiKeys')
    .values({
      keyHash: hashKey(key),
      kind: owner.kind,
      userId: owner.kind === 'user' ? owner.userId : null,
      organizationId: owner.kind === 'organization' ? owner.organizationId : null,
      last4: key.slice(-4),
    })
    .onConflict((oc) => oc.column('keyHash').doNothing())
    .execute();
}

export async function createUser(ctx: Pick<Ctx, 'db'>, email: string | null): Promise<{ userId: string; apiKey: string; existed: boolean }> {
  const apiKey = newApiKey();
  return ctx.db.transaction().execute(async (tx) => {
    // An email that has a user already gets a new key for that user (a lost key's owner gets
    // their organizations back); its other keys keep working.
    const found = email === null ? undefined : await tx.selectFrom('users').select('id').where('email', '=', email).executeTakeFirst();
    const userId = found?.id ?? newId('user');
    if (!found) await tx.insertInto('users').values({ id: userId, email }).execute();
    await insertKey(tx, apiKey, { kind: 'user', userId });
    return { userId, apiKey, existed: found !== undefined };
  });
}

/**
 * Start-up bootstrap: make HARNESSLAYER_USER_KEY a user key (idempotent); otherwise, on a
 * first start with no users at all, create an owner and return its key to print once.
 */
export async function bootstrapOwner(ctx: Pick<Ctx, 'db'>, userKey: string | undefined): Promise<string | undefined> {
  if (userKey) {
    if (!KEY_PATTERN.test(userKey)) throw new Error('HARNESSLAYER_USER_KEY must be dk- followed by 1 to 256 visible ASCII characters (no spaces)');
    const existing = await ctx.db.selectFrom('apiKeys').select('kind').where('keyHash', '=', hashKey(userKey)).executeTakeFirst();
    if (existing) {
      if (existing.kind !== 'user') throw new Error('HARNESSLAYER_USER_KEY is already an organization key');
      return undefined;
    }
    const userId = newId('user');
    await ctx.db.transaction().execute(async (tx) => {
      await tx.insertInto('users').values({ id: userId, email: null }).execute();
      await insertKey(tx, userKey, { kind: 'user', userId });
    });
    return undefined;
  }
  const any = await ctx.db.selectFrom('users').select('id').limit(1).executeTakeFirst();
  if (any) return undefined;
  const { apiKey } = await createUser(ctx, null);
  return apiKey;
}
