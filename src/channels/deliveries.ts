import { sql } from 'kysely';
import type { Ctx } from '../core/context.js';
import { channelWebhook } from '../core/channels.js';
import { randomBase62 } from '../core/ids.js';
import { webhookHeaders, webhookSecret, type HeaderMap } from '../core/webhooks.js';
import type { Tx } from '../storage/db.js';
import type { WebhookDelivery } from '../storage/schema.js';
import { sendOnce, signature, type OutboundResult } from './http.js';
import { nextAttempt, type AttemptData } from './retry.js';

/**
 * Signed webhook deliveries, shared by `profile.created` webhooks and `api` channel webhooks
 * (CONTRACT §7, §9). A delivery row is written, and its first job sent, in the transaction
 * of the event itself; each attempt is recorded before the next is scheduled, and a 2xx
 * marks it delivered (with the webhook's `runCount`) in one transaction.
 */

const MAX_INT32 = 2_147_483_647;
/** Ended deliveries (delivered or given up) are kept this long, then purged. */
const RETENTION_DAYS = 7;

interface Target {
  method: string;
  url: string;
  headers: HeaderMap | null;
  secret: string;
}

export interface NewDelivery {
  organizationId: string;
  /** A `profile.created` webhook... */
  webhookId?: string;
  /** ...or an `api` channel's webhook. */
  channelId?: string;
  /** The profile the event is about: the delivery is deleted with it. */
  profileId: string | null;
  event: string;
  data: unknown;
}

/** Records the delivery and queues its first attempt, in the caller's transaction. */
export async function enqueueDelivery(ctx: Ctx, tx: Tx, d: NewDelivery): Promise<void> {
  const id = `dlv-${randomBase62(16)}`;
  const createdAt = ctx.now();
  await tx
    .insertInto('webhookDeliveries')
    .values({
      id,
      organizationId: d.organizationId,
      webhookId: d.webhookId ?? null,
      channelId: d.channelId ?? null,
      profileId: d.profileId,
      event: d.event,
      body: JSON.stringify({ event: d.event, createdAt: createdAt.toISOString(), data: d.data }),
      lastStatus: null,
      lastError: null,
      createdAt,
      deliveredAt: null,
    })
    .execute();
  await ctx.queue.send('deliver-webhook', { deliveryId: id, attempt: 1 }, { tx, expireInSeconds: 60 });
}

/** Where a delivery goes now: the receiver's current settings (a fixed URL helps pending retries). */
async function targetOf(ctx: Ctx, d: WebhookDelivery): Promise<Target | null> {
  if (d.webhookId) {
    const w = await ctx.db.selectFrom('webhooks').selectAll().where('id', '=', d.webhookId).executeTakeFirst();
    return w ? { method: w.method, url: w.url, headers: webhookHeaders(ctx, w), secret: webhookSecret(ctx, w) } : null;
  }
  const c = d.channelId ? await ctx.db.selectFrom('channels').selectAll().where('id', '=', d.channelId).executeTakeFirst() : undefined;
  const hook = c ? channelWebhook(ctx, c) : null;
  return hook ? { method: 'POST', url: hook.url, headers: hook.headers, secret: hook.secret } : null;
}

/** GET carries no body: `event` and `profileId` go in the query instead. */
function withQuery(url: string, event: string, body: string): string {
  const u = new URL(url);
  const data = (JSON.parse(body) as { data?: { id?: unknown } }).data;
  u.searchParams.set('event', event);
  if (typeof data?.id === 'string') u.searchParams.set('profileId', data.id);
  return u.toString();
}

async function attempt(ctx: Ctx, d: WebhookDelivery, target: Target): Promise<OutboundResult> {
  const isGet = target.method.toUpperCase() === 'GET';
  let url = target.url;
  try {
    if (isGet) url = withQuery(target.url, d.event, d.body);
  } catch {
    return { ok: false, status: null, error: `"${target.url}" is not a valid URL.`, body: '' };
  }
  const body = isGet ? undefined : d.body;
  const headers: Record<string, string> = {
    ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    'user-agent': 'Harnesslayer-Webhooks/1',
    // Configured headers may replace the defaults above, never the two below.
    ...(target.headers ?? {}),
    'harnesslayer-delivery': d.id,
    'harnesslayer-signature': signature(target.secret, body ?? '', ctx.now()),
  };
  return sendOnce(ctx.config, { method: target.method, url, headers, body, guard: true });
}

/** The deliver-webhook job: one attempt, then either done or the next attempt scheduled. */
export async function deliverWebhook(ctx: Ctx, job: AttemptData & { deliveryId: string }): Promise<void> {
  await purgeEnded(ctx);
  const d = await ctx.db.selectFrom('webhookDeliveries').selectAll().where('id', '=', job.deliveryId).executeTakeFirst();
  // Gone with its webhook, channel or profile, already delivered or given up, or this attempt
  // already recorded (a duplicate job): nothing to do.
  if (!d || d.status !== 'pending' || d.attempts >= job.attempt) return;
  const target = await targetOf(ctx, d);
  const result: OutboundResult = target ? await attempt(ctx, d, target) : { ok: false, status: null, error: 'The receiver no longer exists.', body: '' };
  const now = ctx.now();
  await ctx.db.transaction().execute(async (tx) => {
    const next = result.ok || !target ? null : nextAttempt(ctx.config, job, now);
    const recorded = await tx
      .updateTable('webhookDeliveries')
      .set({
        attempts: job.attempt,
        lastStatus: result.status,
        lastError: result.error,
        ...(result.ok ? { status: 'delivered' as const, deliveredAt: now } : next ? {} : { status: 'failed' as const }),
      })
      .where('id', '=', d.id)
      .where('status', '=', 'pending')
      .where('attempts', '=', job.attempt - 1)
      .executeTakeFirst();
    // Another run of this same job recorded the attempt first.
    if (recorded.numUpdatedRows === 0n) return;
    if (result.ok && d.webhookId) {
      await tx
        .updateTable('webhooks')
        .set({ runCount: sql<number>`least(run_count + 1, ${MAX_INT32})`, lastTriggeredAt: now })
        .where('id', '=', d.webhookId)
        .execute();
    }
    if (next) await ctx.queue.send('deliver-webhook', { deliveryId: d.id, ...next.data }, { tx, startAfter: next.startAfter, expireInSeconds: 60 });
  });
}

/** Deliveries ended more than RETENTION_DAYS ago, a batch at a time: each delivery job sweeps some. */
async function purgeEnded(ctx: Ctx): Promise<void> {
  await sql`
    delete from webhook_deliveries where id in (
      select id from webhook_deliveries
       where status <> 'pending' and created_at < now() - make_interval(days => ${RETENTION_DAYS})
       limit 100)`.execute(ctx.db);
}
