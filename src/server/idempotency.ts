import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sql } from 'kysely';
import type { Ctx } from '../core/context.js';
import { BadRequestError, ConflictError } from '../core/errors.js';
import { sha256Hex } from '../core/secrets.js';

/** Printable ASCII, the space included (Node trims a header value's outer spaces). */
const KEY_RULE = /^[\x20-\x7e]{1,255}$/;
const TTL_MS = 24 * 60 * 60 * 1000;
/**
 * A claim still unanswered after this long belongs to a process that died mid-request (no
 * request lasts it: long-polls hold 60 s, a stream's claim is released as it starts): the
 * next request with the key takes it over instead of being told "in progress" for a day.
 */
const ABANDONED_MS = 15 * 60 * 1000;

interface Claim {
  keyHash: string;
  method: string;
  path: string;
  idempotencyKey: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    idempotencyClaim?: Claim;
  }
}

/**
 * `Idempotency-Key` on any POST with an API key: the first reply (2xx-4xx) is kept 24 h and
 * replayed for the same API key, method, path and body; another body is 409
 * idempotency_key_reused; a repeat while the first is in flight is 409 idempotency_in_progress.
 *
 * The scope is what the request means, not how it is spelled: the authenticated key's stored
 * hash (not the Authorization header's text, so `bearer K` and `Bearer  K` are `Bearer K`)
 * and the matched route with its decoded parameters (so `/v1/response/%72un` is
 * `/v1/response/run`). Rows kept before this scope was introduced hashed the header and held
 * the raw path: they match nothing now and expire within 24 h, so nothing migrates them.
 * Routes without an API key (inbound webhooks) have no caller to scope to and ignore the header.
 */
export function installIdempotency(app: FastifyInstance, ctx: Ctx): void {
  // preValidation: the claim is made before the body is checked, so a 400 for the body is the
  // key's first reply like any other (another body with the key is then 409, not a new try).
  app.addHook('preValidation', async (request: FastifyRequest, reply: FastifyReply) => {
    const header = request.headers['idempotency-key'];
    if (request.method !== 'POST' || header === undefined || request.apiKeyHash === undefined) return;
    const key = Array.isArray(header) ? header[0] : header;
    if (!KEY_RULE.test(key)) throw new BadRequestError('Idempotency-Key must be 1-255 printable ASCII characters.');
    const claim: Claim = {
      keyHash: request.apiKeyHash,
      method: request.method,
      path: routePath(request),
      idempotencyKey: key,
    };
    // No body is {}: an endpoint without body fields takes either (CONTRACT §9).
    // A body nested too deep to serialize is refused by the schema check that follows (400);
    // it takes no key.
    let bodyHash: string;
    try {
      bodyHash = sha256Hex(canonicalJson(request.body ?? {}));
    } catch {
      return;
    }
    const now = ctx.now().getTime();
    const [expired, abandoned] = [new Date(now - TTL_MS), new Date(now - ABANDONED_MS)];
    const inserted = await ctx.db.transaction().execute(async (tx) => {
      await tx
        .deleteFrom('idempotencyKeys')
        .where('keyHash', '=', claim.keyHash)
        .where('method', '=', claim.method)
        .where('path', '=', claim.path)
        .where('idempotencyKey', '=', key)
        .where((eb) => eb.or([eb('createdAt', '<', expired), eb.and([eb('statusCode', 'is', null), eb('createdAt', '<', abandoned)])]))
        .execute();
      return tx
        .insertInto('idempotencyKeys')
        .values({ ...claim, bodyHash })
        .onConflict((oc) => oc.columns(['keyHash', 'method', 'path', 'idempotencyKey']).doNothing())
        .returning(sql<number>`1`.as('ok'))
        .executeTakeFirst();
    });
    if (inserted) {
      request.idempotencyClaim = claim;
      return;
    }
    const prior = await ctx.db
      .selectFrom('idempotencyKeys')
      .selectAll()
      .where('keyHash', '=', claim.keyHash)
      .where('method', '=', claim.method)
      .where('path', '=', claim.path)
      .where('idempotencyKey', '=', key)
      .executeTakeFirst();
    if (!prior) throw new ConflictError('This Idempotency-Key is in use; retry shortly.', 'idempotency_in_progress');
    if (prior.bodyHash !== bodyHash) {
      throw new ConflictError('This Idempotency-Key was used with a different body; use a new key.', 'idempotency_key_reused');
    }
    if (prior.statusCode === null) {
      throw new ConflictError('A request with this Idempotency-Key is still in progress; retry shortly.', 'idempotency_in_progress');
    }
    reply.header('idempotent-replayed', 'true');
    const sealed = (prior.response as { sealed: string }).sealed;
    return reply.status(prior.statusCode).type('application/json').send(ctx.secrets.decrypt(sealed));
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const claim = request.idempotencyClaim;
    if (!claim) return payload;
    request.idempotencyClaim = undefined;
    const where = ctx.db
      .updateTable('idempotencyKeys')
      .where('keyHash', '=', claim.keyHash)
      .where('method', '=', claim.method)
      .where('path', '=', claim.path)
      .where('idempotencyKey', '=', claim.idempotencyKey);
    if (reply.statusCode >= 500 || typeof payload !== 'string') {
      // A server error is not an answer worth replaying: free the key for a retry.
      await ctx.db
        .deleteFrom('idempotencyKeys')
        .where('keyHash', '=', claim.keyHash)
        .where('method', '=', claim.method)
        .where('path', '=', claim.path)
        .where('idempotencyKey', '=', claim.idempotencyKey)
        .execute();
      return payload;
    }
    // Replies can hold secrets shown once (keys, webhook secrets): keep them encrypted.
    await where.set({ statusCode: reply.statusCode, response: JSON.stringify({ sealed: ctx.secrets.encrypt(payload) }) }).execute();
    return payload;
  });
}

/** The matched route with its decoded parameters filled in, each encoded one way. */
function routePath(request: FastifyRequest): string {
  const params = (request.params ?? {}) as Record<string, unknown>;
  return request.routeOptions.url!.replace(/:(\w+)/g, (_m, name: string) => encodeURIComponent(String(params[name])));
}

/**
 * JSON with every object's keys sorted: "the same body" is the same JSON value, whatever
 * order a client's serializer writes its keys in. Array order counts.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/**
 * Removes up to `batch` keys past their 24 h (a key is replaced anyway when it is used again
 * after that); returns how many. Every worker's maintenance tick sweeps.
 */
export async function purgeExpiredIdempotencyKeys(ctx: Ctx, batch: number): Promise<number> {
  const cutoff = new Date(ctx.now().getTime() - TTL_MS);
  const res = await sql`
    delete from idempotency_keys where ctid in (
      select ctid from idempotency_keys where created_at < ${cutoff} limit ${batch})`.execute(ctx.db);
  return Number(res.numAffectedRows ?? 0n);
}
