import type { Ctx } from './context.js';
import { BadRequestError, ConflictError, NotFoundError } from './errors.js';
import { newId, randomBase62 } from './ids.js';
import { findApp } from './apps.js';
import { paginate, type PageParams } from './pagination.js';
import { mask, newWebhookSecret } from './secrets.js';
import { assertPublicUrl } from './url-guard.js';
import { assertHeaders, maskHeaders, type HeaderMap } from './webhooks.js';
import type { Db } from '../storage/db.js';
import { isUniqueViolation } from '../storage/pg-errors.js';
import type { Channel } from '../storage/schema.js';

export type ChannelType = 'api' | 'imessage';

/** An `api` channel's webhook as stored (encrypted as a whole). */
export interface ChannelWebhook {
  name: string | null;
  url: string;
  headers: HeaderMap | null;
  /** `whsec_...`: signs every delivery; shown once, in the create reply. */
  secret: string;
}

/** An `imessage` channel's Sendblue settings as stored (encrypted as a whole). */
export interface IMessageData {
  sendBlueAPIKey: string;
  sendBlueSecretKey: string;
  fromNumber: string;
  sendBlueSigningSecret?: string;
}

export interface CreateChannelInput {
  appId: string;
  slug: string;
  type: ChannelType;
  name?: string;
  webhook?: { name?: string; url: string; headers?: HeaderMap };
  data?: IMessageData;
  returnIfExist?: boolean;
}

export function channelWebhook(ctx: Pick<Ctx, 'secrets'>, c: Channel): ChannelWebhook | null {
  return c.webhook ? ctx.secrets.decryptJson<ChannelWebhook>(c.webhook) : null;
}

export function channelData(ctx: Pick<Ctx, 'secrets'>, c: Channel): IMessageData | null {
  return c.data ? ctx.secrets.decryptJson<IMessageData>(c.data) : null;
}

/** Where Sendblue is pointed: only the random token identifies the channel. */
export function inboundUrl(ctx: Pick<Ctx, 'config'>, token: string): string {
  return `${ctx.config.publicUrl}/v1/inbound/sendblue/${token}`;
}

/** The channel as the API shows it: secrets masked; the webhook secret only when asked. */
export function channelView(ctx: Pick<Ctx, 'secrets' | 'config'>, c: Channel, opts: { webhookSecret?: boolean } = {}) {
  const webhook = channelWebhook(ctx, c);
  const data = channelData(ctx, c);
  return {
    id: c.id,
    appId: c.appId,
    slug: c.slug,
    name: c.name,
    type: c.type,
    ...(webhook
      ? {
          webhook: {
            name: webhook.name,
            url: webhook.url,
            headers: maskHeaders(webhook.headers),
            ...(opts.webhookSecret ? { secret: webhook.secret } : {}),
          },
        }
      : {}),
    ...(data
      ? {
          data: {
            sendBlueAPIKey: mask(data.sendBlueAPIKey),
            sendBlueSecretKey: mask(data.sendBlueSecretKey),
            // The sender number is an address, not a secret: shown as is.
            fromNumber: data.fromNumber,
            ...(data.sendBlueSigningSecret !== undefined ? { sendBlueSigningSecret: mask(data.sendBlueSigningSecret) } : {}),
          },
        }
      : {}),
    ...(c.inboundToken ? { inboundUrl: inboundUrl(ctx, c.inboundToken) } : {}),
    createdAt: c.createdAt.toISOString(),
    updatedAt: c.updatedAt.toISOString(),
  };
}

/**
 * A channel of this organization's active apps. Without `appId`, `ref` is a display id;
 * with it, a display id or a slug within that app (as `response/run` names channels).
 */
export async function findChannel(db: Db, organizationId: string, ref: string, opts: { appId?: string } = {}): Promise<Channel> {
  let q = db
    .selectFrom('channels')
    .innerJoin('apps', 'apps.id', 'channels.appId')
    .selectAll('channels')
    .where('channels.organizationId', '=', organizationId)
    .where('apps.status', '=', 'active');
  if (opts.appId) q = q.where('channels.appId', '=', opts.appId).where((eb) => eb.or([eb('channels.id', '=', ref), eb('channels.slug', '=', ref)]));
  else q = q.where('channels.id', '=', ref);
  const rows = await q.execute();
  const channel = rows.find((c) => c.id === ref) ?? rows[0];
  if (!channel) throw new NotFoundError('channel', ref);
  return channel;
}

function slugTaken(slug: string): ConflictError {
  return new ConflictError(`A channel with slug "${slug}" already exists in this app; pick another slug or send returnIfExist.`, 'slug_taken');
}

async function bySlug(db: Db, appId: string, slug: string): Promise<Channel | undefined> {
  return db.selectFrom('channels').selectAll().where('appId', '=', appId).where('slug', '=', slug).executeTakeFirst();
}

/** Each type takes its own settings: a webhook for `api`, Sendblue data for `imessage`. */
function assertTypeSettings(input: CreateChannelInput): void {
  if (input.type === 'api' && input.data !== undefined) {
    throw new BadRequestError('data is only for imessage channels; an api channel takes an optional webhook.', [{ field: 'body.data', message: 'not allowed for type api' }]);
  }
  if (input.type === 'imessage') {
    if (input.webhook !== undefined) {
      throw new BadRequestError('webhook is only for api channels; an imessage channel replies through Sendblue.', [{ field: 'body.webhook', message: 'not allowed for type imessage' }]);
    }
    if (input.data === undefined) {
      throw new BadRequestError('An imessage channel requires data: {sendBlueAPIKey, sendBlueSecretKey, fromNumber}.', [{ field: 'body.data', message: '"data" is required for type imessage' }]);
    }
  }
  if (input.webhook?.headers) assertHeaders(input.webhook.headers, 'webhook.headers');
}

/** Creates a channel; `created: false` when `returnIfExist` found one (no secret to show then). */
export async function createChannel(ctx: Ctx, organizationId: string, input: CreateChannelInput): Promise<{ channel: Channel; created: boolean }> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  assertTypeSettings(input);
  const existing = await bySlug(ctx.db, app.id, input.slug);
  if (existing) {
    if (input.returnIfExist) return { channel: existing, created: false };
    throw slugTaken(input.slug);
  }
  if (input.webhook) await assertPublicUrl(ctx.config, input.webhook.url);
  const webhook: ChannelWebhook | null = input.webhook
    ? { name: input.webhook.name ?? null, url: input.webhook.url, headers: input.webhook.headers ?? null, secret: newWebhookSecret() }
    : null;
  const now = ctx.now();
  try {
    const channel = await ctx.db
      .insertInto('channels')
      .values({
        id: newId('channel'),
        organizationId,
        appId: app.id,
        slug: input.slug,
        name: input.name ?? input.slug,
        type: input.type,
        webhook: webhook ? ctx.secrets.encryptJson(webhook) : null,
        data: input.data ? ctx.secrets.encryptJson(input.data) : null,
        // 32 base62 characters, about 190 bits: unguessable, and never an id or slug.
        inboundToken: input.type === 'imessage' ? randomBase62(32) : null,
        createdAt: now,
        updatedAt: now,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return { channel, created: true };
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    // Lost a race for the slug: behave as if we had seen the winner first.
    const winner = await bySlug(ctx.db, app.id, input.slug);
    if (winner && input.returnIfExist) return { channel: winner, created: false };
    throw slugTaken(input.slug);
  }
}

export async function listChannels(ctx: Ctx, organizationId: string, params: PageParams & { appId: string }) {
  const app = await findApp(ctx.db, organizationId, params.appId);
  const q = ctx.db.selectFrom('channels').selectAll().where('appId', '=', app.id);
  return paginate(q, params, (q) => q.orderBy('createdAt', 'desc').orderBy('id', 'desc'), (c) => channelView(ctx, c));
}

export async function updateChannel(
  ctx: Ctx,
  organizationId: string,
  ref: string,
  input: { slug?: string; name?: string },
  appRef?: string,
): Promise<Channel> {
  const appId = appRef ? (await findApp(ctx.db, organizationId, appRef)).id : undefined;
  const channel = await findChannel(ctx.db, organizationId, ref, { appId });
  if (input.slug === undefined && input.name === undefined) return channel;
  try {
    return await ctx.db
      .updateTable('channels')
      .set({ ...(input.slug !== undefined ? { slug: input.slug } : {}), ...(input.name !== undefined ? { name: input.name } : {}), updatedAt: ctx.now() })
      .where('id', '=', channel.id)
      .returningAll()
      .executeTakeFirstOrThrow();
  } catch (err) {
    if (isUniqueViolation(err)) throw new ConflictError(`A channel with slug "${input.slug}" already exists in this app.`, 'slug_taken');
    throw err;
  }
}

export async function deleteChannel(ctx: Ctx, organizationId: string, ref: string, appRef?: string): Promise<{ id: string; deleted: true }> {
  const appId = appRef ? (await findApp(ctx.db, organizationId, appRef)).id : undefined;
  const channel = await findChannel(ctx.db, organizationId, ref, { appId });
  await ctx.db.deleteFrom('channels').where('id', '=', channel.id).execute();
  return { id: channel.id, deleted: true };
}
