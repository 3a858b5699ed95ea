import { validateHeaderName, validateHeaderValue } from 'node:http';
import type { Ctx } from './context.js';
import { BadRequestError, NotFoundError } from './errors.js';
import { newId } from './ids.js';
import { findApp } from './apps.js';
import { paginate, type PageParams } from './pagination.js';
import { mask, newWebhookSecret } from './secrets.js';
import { assertPublicUrl } from './url-guard.js';
import type { Db } from '../storage/db.js';
import type { Webhook } from '../storage/schema.js';

export const WEBHOOK_EVENTS = ['profile.created'] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];
export const WEBHOOK_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
export type WebhookMethod = (typeof WEBHOOK_METHODS)[number];

export type HeaderMap = Record<string, string>;

// The server sets these on every delivery (framing, signature); a configured header must
// not replace them.
const RESERVED_HEADERS = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'harnesslayer-signature',
]);

/** Configured delivery headers: no reserved names, no name given twice in other case, only what HTTP can carry. */
export function assertHeaders(headers: HeaderMap, field: string): void {
  const seen = new Set<string>();
  for (const name of Object.keys(headers)) {
    const lower = name.toLowerCase();
    if (RESERVED_HEADERS.has(lower)) throw new BadRequestError(`${field}: the header "${name}" is set by the server and cannot be configured.`);
    if (seen.has(lower)) throw new BadRequestError(`${field}: the header "${name}" is given twice.`);
    seen.add(lower);
    try {
      validateHeaderName(name);
      validateHeaderValue(name, headers[name]);
    } catch {
      throw new BadRequestError(`${field}: the header "${name}" cannot be sent over HTTP: names are letters, digits and !#$%&'*+-.^_\`|~, values printable ASCII or Latin-1 (no line breaks, no other Unicode).`);
    }
  }
}

/** Header values are secrets (tokens): shown masked, names as given. */
export function maskHeaders(headers: HeaderMap | null): HeaderMap | null {
  return headers === null ? null : Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, mask(v)]));
}

/** The stored headers, decrypted, for delivery. */
export function webhookHeaders(ctx: Pick<Ctx, 'secrets'>, w: Webhook): HeaderMap | null {
  return w.headers ? ctx.secrets.decryptJson<HeaderMap>(w.headers) : null;
}

/** The signing secret (`whsec_...`), decrypted, for delivery. */
export function webhookSecret(ctx: Pick<Ctx, 'secrets'>, w: Webhook): string {
  return ctx.secrets.decrypt(w.secret);
}

/** The webhook as the API shows it; `secret` only in the create reply. */
export function webhookView(ctx: Pick<Ctx, 'secrets'>, w: Webhook, opts: { secret?: string } = {}) {
  return {
    id: w.id,
    appId: w.appId,
    event: w.event,
    method: w.method,
    url: w.url,
    headers: maskHeaders(webhookHeaders(ctx, w)),
    ...(opts.secret !== undefined ? { secret: opts.secret } : {}),
    runCount: w.runCount,
    lastTriggeredAt: w.lastTriggeredAt ? w.lastTriggeredAt.toISOString() : null,
    createdAt: w.createdAt.toISOString(),
    updatedAt: w.updatedAt.toISOString(),
  };
}

/** A webhook of this organization's active apps. */
export async function findWebhook(db: Db, organizationId: string, id: string): Promise<Webhook> {
  const webhook = await db
    .selectFrom('webhooks')
    .innerJoin('apps', 'apps.id', 'webhooks.appId')
    .selectAll('webhooks')
    .where('webhooks.id', '=', id)
    .where('webhooks.organizationId', '=', organizationId)
    .where('apps.status', '=', 'active')
    .executeTakeFirst();
  if (!webhook) throw new NotFoundError('webhook', id);
  return webhook;
}

export interface CreateWebhookInput {
  appId: string;
  event: WebhookEvent;
  method?: WebhookMethod;
  url: string;
  headers?: HeaderMap;
}

export async function createWebhook(ctx: Ctx, organizationId: string, input: CreateWebhookInput): Promise<{ webhook: Webhook; secret: string }> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  if (input.headers) assertHeaders(input.headers, 'headers');
  await assertPublicUrl(ctx.config, input.url);
  const secret = newWebhookSecret();
  const now = ctx.now();
  const webhook = await ctx.db
    .insertInto('webhooks')
    .values({
      id: newId('webhook'),
      organizationId,
      appId: app.id,
      event: input.event,
      method: input.method ?? 'POST',
      url: input.url,
      headers: input.headers ? ctx.secrets.encryptJson(input.headers) : null,
      secret: ctx.secrets.encrypt(secret),
      runCount: 0,
      lastTriggeredAt: null,
      createdAt: now,
      updatedAt: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return { webhook, secret };
}

export async function listWebhooks(ctx: Ctx, organizationId: string, params: PageParams & { appId: string }) {
  const app = await findApp(ctx.db, organizationId, params.appId);
  const q = ctx.db.selectFrom('webhooks').selectAll().where('appId', '=', app.id);
  return paginate(q, params, (q) => q.orderBy('createdAt', 'desc').orderBy('id', 'desc'), (w) => webhookView(ctx, w));
}

export interface UpdateWebhookInput {
  webhookId?: string;
  /** Alias of webhookId. */
  id?: string;
  event?: WebhookEvent;
  method?: WebhookMethod;
  url?: string;
  headers?: HeaderMap | null;
  lastTriggeredAt?: string | null;
  runCount?: number;
}

export async function updateWebhook(ctx: Ctx, organizationId: string, input: UpdateWebhookInput): Promise<Webhook> {
  const { webhookId, id: alias, ...fields } = input;
  if (webhookId !== undefined && alias !== undefined && webhookId !== alias) {
    throw new BadRequestError('webhookId and id name different webhooks; send one of them.');
  }
  const id = webhookId ?? alias;
  if (id === undefined) throw new BadRequestError('webhookId is required (or its alias id).', [{ field: 'body.webhookId', message: '"webhookId" is required' }]);
  const webhook = await findWebhook(ctx.db, organizationId, id);
  if (fields.headers) assertHeaders(fields.headers, 'headers');
  if (fields.url !== undefined) await assertPublicUrl(ctx.config, fields.url);
  const triggeredAt = typeof fields.lastTriggeredAt === 'string' ? new Date(fields.lastTriggeredAt) : fields.lastTriggeredAt;
  // The schema's date-time format admits a leap second that Date cannot hold, and years the
  // database cannot (0000, or past 9999 once the offset is applied).
  if (triggeredAt && Number.isNaN(triggeredAt.getTime())) throw new BadRequestError('lastTriggeredAt is not a valid ISO datetime.');
  if (triggeredAt && (triggeredAt.getUTCFullYear() < 1 || triggeredAt.getUTCFullYear() > 9999)) {
    throw new BadRequestError('lastTriggeredAt must fall between the years 0001 and 9999 (UTC).');
  }
  const patch = {
    ...(fields.event !== undefined ? { event: fields.event } : {}),
    ...(fields.method !== undefined ? { method: fields.method } : {}),
    ...(fields.url !== undefined ? { url: fields.url } : {}),
    ...(fields.headers !== undefined ? { headers: fields.headers === null ? null : ctx.secrets.encryptJson(fields.headers) } : {}),
    ...(triggeredAt !== undefined ? { lastTriggeredAt: triggeredAt } : {}),
    ...(fields.runCount !== undefined ? { runCount: fields.runCount } : {}),
  };
  if (Object.keys(patch).length === 0) return webhook;
  return ctx.db
    .updateTable('webhooks')
    .set({ ...patch, updatedAt: ctx.now() })
    .where('id', '=', webhook.id)
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function deleteWebhook(ctx: Ctx, organizationId: string, id: string): Promise<{ id: string; deleted: true }> {
  const webhook = await findWebhook(ctx.db, organizationId, id);
  await ctx.db.deleteFrom('webhooks').where('id', '=', webhook.id).execute();
  return { id: webhook.id, deleted: true };
}
