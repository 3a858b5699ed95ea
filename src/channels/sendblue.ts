import { createHash, timingSafeEqual } from 'node:crypto';
import { sql } from 'kysely';
import type { Ctx } from '../core/context.js';
import { channelData } from '../core/channels.js';
import { AppError, LimitExceededError, NotFoundError, UnauthorizedError } from '../core/errors.js';
import { withoutNul, type EventHub, type Signal } from '../core/events.js';
import { startRun, type RunReply } from '../core/responses.js';
import type { Tx } from '../storage/db.js';
import type { Instance } from '../storage/schema.js';
import { nextAttempt, type AttemptData } from './retry.js';
import { sendblue, splitContent, type SendblueResult } from './sendblue-api.js';

/**
 * iMessage over Sendblue (CONTRACT §6, §9; src/channels/README.md):
 *
 *   inbound POST ──▶ received ──sendblue-inbound──▶ running ──instance ends──▶ replying ──sendblue-reply──▶ replied
 *                       │  (over the limit: replying with the limitMessage)       └──▶ no_reply (no output)
 *                       └──▶ failed (the run was refused)                   replying ──retries exhausted──▶ failed
 *
 * The inbound request only stores the message (its `message_handle` is the key, so a
 * duplicate runs once) and answers; everything after is a durable job, and the reply's
 * progress (parts sent) is stored, so a restart at any point replies exactly once.
 */

/** Duplicates are remembered at least 7 days (CONTRACT §9); older handled messages are purged. */
const RETENTION_DAYS = 30;

type Key = { channelId: string; messageHandle: string };

interface InboundMessage {
  messageHandle: string;
  fromNumber: string;
  groupId: string | null;
  content: string | null;
  mediaUrls: string[];
}

const text = (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? v : null);

/** CONTRACT §9: a profile identifier is 1–256 characters; a group_id is held to the same. */
const MAX_IDENTIFIER = 256;
/** CONTRACT §9: a sessionId is 1–128 characters. */
const MAX_SESSION_ID = 128;
/** Control, format (zero-width, bidi), surrogate and unassigned characters: never part of an identity. */
const INVISIBLE = /\p{C}/u;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/**
 * The sender as one canonical identifier, or null when it is neither a phone number nor an
 * Apple ID email. Sendblue sends E.164 (`+15125550100`); other spellings of the same number
 * (spaces, dashes, dots, parentheses, no `+`) must reach the same profile, session and usage
 * counter, or a sender could dodge a limit by re-spelling it. A number without `+` is taken
 * as North American (Sendblue's lines are US numbers): 10 digits get `+1`, 11 digits starting
 * with 1 get `+`; any other bare number is ambiguous and refused. Emails are lowercased
 * (Apple IDs ignore case). The result is also what Sendblue's `number` field expects.
 */
export function imessageSender(raw: unknown): string | null {
  if (typeof raw !== 'string') return null;
  const s = raw.trim();
  if (s === '' || s.length > MAX_IDENTIFIER || INVISIBLE.test(s)) return null;
  const phone = s.replace(/[\s().-]/g, '');
  if (/^\+[1-9]\d{6,14}$/.test(phone)) return phone;
  if (/^1[2-9]\d{9}$/.test(phone)) return `+${phone}`;
  if (/^[2-9]\d{9}$/.test(phone)) return `+1${phone}`;
  if (EMAIL.test(s)) return s.toLowerCase();
  return null;
}

/** A group_id as given (Sendblue's are UUIDs), or null when it breaks the identifier rules. */
function groupIdOf(raw: string): string | null {
  return raw.length <= MAX_IDENTIFIER && !INVISIBLE.test(raw) ? raw : null;
}

/**
 * The session of a sender (one per channel and number) or of a group chat. The readable forms
 * are the ones existing deployments already have: `imsg-<channel>-<sender>` and
 * `imsg-<channel>-group-<group_id>`. Anything else (a group id beyond `[A-Za-z0-9_-]`, or an id
 * over 128 characters) is `imsg-<channel>-~<sender|group>-<sha256 hex>`. No two forms can meet:
 * after the channel, a sender starts with `+` or holds an `@` (imessageSender), the readable
 * group form starts with `group-` and the hashed one with `~`, and neither holds `+` or `@`.
 */
export function imessageSessionId(channelId: string, from: { sender: string } | { groupId: string }): string {
  const readable = 'sender' in from ? `imsg-${channelId}-${from.sender}` : /^[A-Za-z0-9_-]+$/.test(from.groupId) ? `imsg-${channelId}-group-${from.groupId}` : null;
  if (readable && readable.length <= MAX_SESSION_ID) return readable;
  const [kind, value] = 'sender' in from ? ['sender', from.sender] : ['group', from.groupId];
  return `imsg-${channelId}-~${kind}-${createHash('sha256').update(value).digest('hex')}`;
}

/** The fields of Sendblue's receive webhook we use; null for a payload nothing can be done with. */
const MAX_HANDLE = 256;

function parseInbound(body: unknown): InboundMessage | null {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return null;
  const b = body as Record<string, unknown>;
  const handle = text(b.message_handle);
  // Sendblue's handles are short ids; a longer one is no Sendblue message (and the key of the
  // duplicates table has a size limit).
  const messageHandle = handle !== null && handle.length <= MAX_HANDLE && !INVISIBLE.test(handle) ? handle : null;
  const fromNumber = imessageSender(b.from_number);
  const rawGroupId = text(b.group_id);
  const groupId = rawGroupId === null ? null : groupIdOf(rawGroupId);
  const media = Array.isArray(b.media_url) ? b.media_url : [b.media_url];
  const mediaUrls = media.map(text).filter((u): u is string => u !== null && !INVISIBLE.test(u));
  // Stored text holds no NUL (PostgreSQL refuses it): one in a message is U+FFFD.
  const content = withoutNul(text(b.content));
  if (!messageHandle || !fromNumber || (rawGroupId !== null && groupId === null) || (content === null && mediaUrls.length === 0)) return null;
  return { messageHandle, fromNumber, groupId, content, mediaUrls };
}

function sameSecret(given: string | undefined, expected: string): boolean {
  // Equal-length digests: the comparison takes the same time whatever was sent.
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return given !== undefined && timingSafeEqual(digest(given), digest(expected));
}

export type InboundStatus = 'queued' | 'duplicate' | 'ignored';

/** `POST /v1/inbound/sendblue/{token}`: checks, stores, queues; never waits for the run. */
export async function acceptInbound(ctx: Ctx, token: string, signingSecret: string | undefined, body: unknown): Promise<{ status: InboundStatus }> {
  const channel = await ctx.db
    .selectFrom('channels')
    .innerJoin('apps', 'apps.id', 'channels.appId')
    .selectAll('channels')
    .where('channels.inboundToken', '=', token)
    .where('channels.type', '=', 'imessage')
    .where('apps.status', '=', 'active')
    .executeTakeFirst();
  if (!channel) throw new NotFoundError('inbound URL');
  const expected = channelData(ctx, channel)?.sendBlueSigningSecret;
  if (expected && !sameSecret(signingSecret, expected)) {
    throw new UnauthorizedError('Missing or wrong sb-signing-secret header: it must be the signing secret configured in Sendblue.');
  }
  const m = parseInbound(body);
  // Payloads without a usable sender (see imessageSender) or anything to say, and our own sent
  // messages echoed back (a flag some relays pass on as a string): 2xx so Sendblue does not retry.
  if (!m) return { status: 'ignored' };
  const outbound = (body as { is_outbound?: unknown }).is_outbound;
  if (outbound === true || outbound === 'true') return { status: 'ignored' };
  const status = await ctx.db.transaction().execute(async (tx) => {
    const inserted = await tx
      .insertInto('sendblueMessages')
      .values({
        channelId: channel.id,
        messageHandle: m.messageHandle,
        organizationId: channel.organizationId,
        fromNumber: m.fromNumber,
        groupId: m.groupId,
        content: m.content,
        mediaUrls: m.mediaUrls.length > 0 ? JSON.stringify(m.mediaUrls) : null,
        instanceId: null,
        replyText: null,
        repliedAt: null,
        error: null,
      })
      .onConflict((oc) => oc.columns(['channelId', 'messageHandle']).doNothing())
      .returning('messageHandle')
      .executeTakeFirst();
    if (!inserted) return 'duplicate' as const;
    await ctx.queue.send('sendblue-inbound', { channelId: channel.id, messageHandle: m.messageHandle }, { tx });
    return 'queued' as const;
  });
  if (status === 'queued') ctx.queue.wake('sendblue-inbound');
  return { status };
}

class AlreadyStarted extends Error {}

/**
 * `ctx` for `startRun` whose instance-creating transaction also marks the message `running`:
 * the instance and the mark commit together, so a retried job never starts a second run, and
 * a concurrent duplicate of the job rolls its whole run back.
 */
function markingRuns(ctx: Ctx, key: Key): Ctx {
  const events = Object.create(ctx.events) as EventHub;
  events.transaction = <T>(fn: (tx: Tx, signal: Signal) => Promise<T>) =>
    ctx.events.transaction(async (tx, signal) => {
      const result = await fn(tx, signal);
      const instanceId = (result as Partial<RunReply> | null)?.instanceId;
      if (typeof instanceId === 'string') {
        const marked = await tx
          .updateTable('sendblueMessages')
          .set({ status: 'running', instanceId })
          .where('channelId', '=', key.channelId)
          .where('messageHandle', '=', key.messageHandle)
          .where('status', '=', 'received')
          .executeTakeFirst();
        if (marked.numUpdatedRows === 0n) throw new AlreadyStarted();
      }
      return result;
    });
  return { ...ctx, events };
}

/** Sets the message's reply (the agent's output or the limit message) and queues sending it. */
async function queueReply(ctx: Ctx, tx: Tx, key: Key, from: 'received' | 'running', reply: string): Promise<void> {
  const set = await tx
    .updateTable('sendblueMessages')
    .set({ status: 'replying', replyText: reply })
    .where('channelId', '=', key.channelId)
    .where('messageHandle', '=', key.messageHandle)
    .where('status', '=', from)
    .executeTakeFirst();
  if (set.numUpdatedRows > 0n) await ctx.queue.send('sendblue-reply', { ...key, attempt: 1 }, { tx, expireInSeconds: 300 });
}

/** The sendblue-inbound job: typing indicator, then the run (or the limit message). */
export async function processInbound(ctx: Ctx, key: Key): Promise<void> {
  await purgeOld(ctx);
  const m = await messageOf(ctx, key);
  if (!m || m.status !== 'received') return;
  const channel = await ctx.db.selectFrom('channels').selectAll().where('id', '=', key.channelId).executeTakeFirst();
  const app = channel && (await ctx.db.selectFrom('apps').select(['id', 'type']).where('id', '=', channel.appId).executeTakeFirst());
  const data = channel && channelData(ctx, channel);
  if (!channel || !app || !data) return;
  // Stored normalized since the sender was validated; a row from before that is normalized here.
  const sender = imessageSender(m.fromNumber);
  if (!sender) {
    await ctx.db
      .updateTable('sendblueMessages')
      .set({ status: 'failed', error: 'The sender is neither a phone number nor an email address.' })
      .where('channelId', '=', key.channelId)
      .where('messageHandle', '=', key.messageHandle)
      .where('status', '=', 'received')
      .execute();
    return;
  }
  // Group chats of openclaw apps share one group session; otherwise one per (channel, number).
  const shared = app.type === 'openclaw' ? m.groupId : null;
  const sessionId = imessageSessionId(channel.id, shared ? { groupId: shared } : { sender });
  if (shared) {
    const now = ctx.now();
    await ctx.db
      .insertInto('sessions')
      .values({ id: sessionId, organizationId: channel.organizationId, appId: app.id, type: 'group', profileId: null, lastInstanceId: null, turns: 0, createdAt: now, lastActiveAt: now })
      .onConflict((oc) => oc.columns(['organizationId', 'id']).doNothing())
      .execute();
  }
  // Best effort, as Sendblue delivers it; Sendblue has no typing indicator for groups.
  if (m.groupId === null) {
    const typing = await sendblue(ctx.config, data, '/api/send-typing-indicator', { number: sender, from_number: data.fromNumber });
    if (!typing.ok) console.warn('[sendblue] typing indicator:', typing.error);
  }
  const images = m.mediaUrls ? (JSON.parse(m.mediaUrls) as string[]).map((url) => ({ url })) : [];
  try {
    await startRun(markingRuns(ctx, key), channel.organizationId, {
      appId: app.id,
      channelId: channel.id,
      userId: sender,
      sessionId,
      ...(m.content !== null ? { input: m.content } : {}),
      ...(images.length > 0 ? { images } : {}),
    });
  } catch (err) {
    if (err instanceof AlreadyStarted) return;
    // Refused over the limit (nothing ran, the model was not called): the limit message instead.
    if (err instanceof LimitExceededError) {
      await ctx.db.transaction().execute((tx) => queueReply(ctx, tx, key, 'received', err.message));
      return;
    }
    if (!(err instanceof AppError)) throw err; // a database hiccup: the queue runs the job again
    await ctx.db
      .updateTable('sendblueMessages')
      .set({ status: 'failed', error: `The run was refused: ${err.message}` })
      .where('channelId', '=', key.channelId)
      .where('messageHandle', '=', key.messageHandle)
      .where('status', '=', 'received')
      .execute();
  }
}

/** Instance-ended hook: the run of an inbound message ended; queue its reply in that transaction. */
export async function onSendblueInstanceEnded(ctx: Ctx, tx: Tx, instance: Instance): Promise<void> {
  if (!instance.channelId) return;
  const m = await tx.selectFrom('sendblueMessages').select(['channelId', 'messageHandle', 'status']).where('instanceId', '=', instance.id).executeTakeFirst();
  if (!m || m.status !== 'running') return;
  const reply = instance.output?.trim();
  if (reply) return queueReply(ctx, tx, m, 'running', reply);
  await tx.updateTable('sendblueMessages').set({ status: 'no_reply' }).where('channelId', '=', m.channelId).where('messageHandle', '=', m.messageHandle).execute();
}

/** The sendblue-reply job: sends the parts not sent yet; on an error, the next attempt or give up. */
export async function processReply(ctx: Ctx, job: Key & AttemptData): Promise<void> {
  const m = await messageOf(ctx, job);
  if (!m || m.status !== 'replying' || m.replyAttempts >= job.attempt) return;
  const channel = await ctx.db.selectFrom('channels').selectAll().where('id', '=', job.channelId).executeTakeFirst();
  const data = channel ? channelData(ctx, channel) : null;
  if (!data) return;
  const parts = splitContent(m.replyText ?? '');
  const number = imessageSender(m.fromNumber) ?? m.fromNumber; // the E.164 (or email) Sendblue expects
  let failure: SendblueResult | undefined;
  for (let sent = m.replyPartsSent; sent < parts.length; sent++) {
    const res = m.groupId
      ? await sendblue(ctx.config, data, '/api/send-group-message', { group_id: m.groupId, from_number: data.fromNumber, content: parts[sent] })
      : await sendblue(ctx.config, data, '/api/send-message', { number, from_number: data.fromNumber, content: parts[sent] });
    if (!res.ok) {
      failure = res;
      break;
    }
    // The sent marker, part by part: a retry or a restart resumes after the last part sent.
    await ctx.db.updateTable('sendblueMessages').set({ replyPartsSent: sent + 1 }).where('channelId', '=', job.channelId).where('messageHandle', '=', job.messageHandle).execute();
  }
  const now = ctx.now();
  await ctx.db.transaction().execute(async (tx) => {
    const next = failure && !failure.permanent ? nextAttempt(ctx.config, job, now) : null;
    const recorded = await tx
      .updateTable('sendblueMessages')
      .set({ replyAttempts: job.attempt, ...(failure ? { error: failure.error, ...(next ? {} : { status: 'failed' as const }) } : { status: 'replied' as const, repliedAt: now, error: null }) })
      .where('channelId', '=', job.channelId)
      .where('messageHandle', '=', job.messageHandle)
      .where('status', '=', 'replying')
      .where('replyAttempts', '=', job.attempt - 1)
      .executeTakeFirst();
    if (recorded.numUpdatedRows === 0n || !failure) return;
    if (next) {
      await ctx.queue.send('sendblue-reply', { channelId: job.channelId, messageHandle: job.messageHandle, ...next.data }, { tx, startAfter: next.startAfter, expireInSeconds: 300 });
      return;
    }
    // Given up: say so on the instance, where the API caller looks.
    const why = `The reply could not be sent through Sendblue: ${failure.error}`;
    if (m.instanceId) await tx.updateTable('instances').set({ error: sql<string>`coalesce(error || ' ', '') || ${why}` }).where('id', '=', m.instanceId).execute();
  });
}

async function messageOf(ctx: Ctx, key: Key) {
  return ctx.db.selectFrom('sendblueMessages').selectAll().where('channelId', '=', key.channelId).where('messageHandle', '=', key.messageHandle).executeTakeFirst();
}

async function purgeOld(ctx: Ctx): Promise<void> {
  await sql`
    delete from sendblue_messages where (channel_id, message_handle) in (
      select channel_id, message_handle from sendblue_messages
       where created_at < now() - make_interval(days => ${RETENTION_DAYS}) and status in ('replied', 'no_reply', 'failed')
       limit 100)`.execute(ctx.db);
}
