import { sql } from 'kysely';
import type { Ctx } from './context.js';
import { BadRequestError, ConflictError, LimitExceededError } from './errors.js';
import { appendEvents } from './events.js';
import { newId } from './ids.js';
import { DEFAULT_LIMIT_MESSAGE, findApp } from './apps.js';
import { findChannel } from './channels.js';
import { insertProfile } from './profiles.js';
import { enqueueRun, OPEN } from './runs.js';
import { assertPublicUrl } from './url-guard.js';
import { counterOrder, periodStart } from './usage.js';
import type { Tx } from '../storage/db.js';
import { isUniqueViolation } from '../storage/pg-errors.js';
import type { App, Profile, RunImage, Session } from '../storage/schema.js';

/**
 * `POST /v1/response/run` (CONTRACT §6, §7, §9): validate, resolve or create the profile
 * and the session, charge the access group, create the queued instance and enqueue it,
 * charge and instance in one transaction. The turn itself runs in a worker
 * (src/runtime/runner.ts).
 */

export const IMAGE_MEDIA_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'] as const;
export const MAX_IMAGES = 20;
export const MAX_IMAGE_BYTES = 5 * 1024 * 1024;

export interface ImageInput {
  mediaType?: string;
  data?: string;
  url?: string;
}

export interface RunInput {
  appId: string;
  channelId: string;
  userId: string;
  input?: string;
  images?: ImageInput[];
  sessionId?: string;
}

/** Session ids `GET`/`DELETE /v1/session/{id}` cannot reach: the list route, and URL dot segments. */
const UNADDRESSABLE_SESSION_IDS = ['list', '.', '..'];

export interface RunReply {
  instanceId: string;
  sessionId: string;
  profileId: string;
  status: 'queued';
}

export async function startRun(ctx: Ctx, organizationId: string, input: RunInput): Promise<RunReply> {
  const app = await findApp(ctx.db, organizationId, input.appId);
  const channel = await findChannel(ctx.db, organizationId, input.channelId, { appId: app.id });
  const images = await checkImages(ctx, input.images ?? []);
  if (input.input === undefined && images.length === 0) {
    throw new BadRequestError('Send input (text), images, or both.', [{ field: 'body.input', message: '"input" or a non-empty "images" is required' }]);
  }
  if (!app.headVersionId) {
    throw new ConflictError(`App "${app.slug}" has no version yet; deploy one before running it.`, 'no_head_version');
  }
  // A run refused for its session creates nothing, not even the user's profile.
  if (input.sessionId !== undefined) {
    if (UNADDRESSABLE_SESSION_IDS.includes(input.sessionId)) {
      throw new BadRequestError(`sessionId "${input.sessionId}" cannot be read or deleted at /v1/session/{id}; choose another.`, [{ field: 'body.sessionId', message: 'reserved' }]);
    }
    await checkSessionFor(ctx, app, input.userId, input.sessionId);
  }
  for (let attempt = 1; ; attempt++) {
    const profile = await resolveProfile(ctx, app, input.userId);
    const reply = await queueRun(ctx, organizationId, app, channel, profile, input, images);
    if (reply) return reply;
    // The profile was deleted between the lookup and the transaction: the user id now names
    // no profile, or a new one. Looked up again.
    if (attempt >= 3) throw new ConflictError(`The profile of user "${input.userId}" is being deleted; run again.`, 'profile_deleting');
  }
}

/** The run's transaction; null when the profile is no longer active (its deletion committed first). */
async function queueRun(ctx: Ctx, organizationId: string, app: App, channel: { id: string }, profile: Profile, input: RunInput, images: RunImage[]): Promise<RunReply | null> {
  return ctx.events.transaction(async (tx, signal) => {
    // Shared lock: runs of the profile go on together, its deletion waits for them (and a run
    // waits for a deletion in progress, then sees it). So every instance of a profile is
    // committed before its deletion, and its deletion job finds them all.
    // The group is read under the lock too: a move to another group (or the group's deletion,
    // which moves its profiles) commits before this read or waits for this run.
    const live = await tx.selectFrom('profiles').select(['status', 'accessGroupId']).where('id', '=', profile.id).forShare().executeTakeFirst();
    if (live?.status !== 'active') return null;
    const sessionId = await resolveSession(ctx, tx, app, profile, input.sessionId);
    const now = ctx.now();
    await charge(tx, profile.id, live.accessGroupId, now);
    const instanceId = newId('instance');
    await tx
      .insertInto('instances')
      .values({
        id: instanceId,
        organizationId,
        appId: app.id,
        channelId: channel.id,
        sessionId,
        profileId: profile.id,
        userId: input.userId,
        status: 'queued',
        input: input.input ?? null,
        output: null,
        error: null,
        stateId: null,
        images: images.length > 0 ? JSON.stringify(images) : null,
        createdAt: now,
      })
      .execute();
    await appendEvents(tx, signal, instanceId, [{ type: 'status', data: { status: 'queued' }, createdAt: now }]);
    await tx
      .updateTable('sessions')
      .set({ lastInstanceId: instanceId, lastActiveAt: now })
      .where('organizationId', '=', organizationId)
      .where('id', '=', sessionId)
      .execute();
    await enqueueRun(ctx, tx, instanceId);
    return { instanceId, sessionId, profileId: profile.id, status: 'queued' as const };
  });
}

/** `images: []` counts as absent; each item is `{mediaType, data}` (base64) or `{url}`. */
export async function checkImages(ctx: Pick<Ctx, 'config'>, images: ImageInput[]): Promise<RunImage[]> {
  if (images.length > MAX_IMAGES) throw new BadRequestError(`At most ${MAX_IMAGES} images per run.`, [{ field: 'body.images', message: `must hold at most ${MAX_IMAGES} items` }]);
  const out: RunImage[] = [];
  for (const [i, image] of images.entries()) {
    const field = `body.images.${i}`;
    const bad = (message: string) => new BadRequestError(`${field}: ${message}`, [{ field, message }]);
    if (image.url !== undefined) {
      if (image.data !== undefined || image.mediaType !== undefined) throw bad('give either {mediaType, data} or {url}, not both');
      if (!/^https?:\/\//i.test(image.url)) throw bad('url must be an http or https URL');
      await assertPublicUrl(ctx.config, image.url);
      out.push({ url: image.url });
      continue;
    }
    if (image.mediaType === undefined || image.data === undefined) throw bad('needs mediaType and data (base64), or url');
    if (!(IMAGE_MEDIA_TYPES as readonly string[]).includes(image.mediaType)) throw bad(`mediaType must be one of ${IMAGE_MEDIA_TYPES.join(', ')}`);
    const data = image.data;
    if (data.startsWith('data:')) throw bad('data is plain base64, without a "data:...;base64," prefix');
    if (data.length === 0 || data.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(data)) throw bad('data must be standard base64');
    const size = (data.length / 4) * 3 - (data.endsWith('==') ? 2 : data.endsWith('=') ? 1 : 0);
    if (size > MAX_IMAGE_BYTES) throw bad(`the image is ${size} bytes; at most ${MAX_IMAGE_BYTES} (5 MiB) decoded`);
    // The model refuses an image whose bytes are not its declared type: say so now.
    const head = Buffer.from(data.slice(0, 24), 'base64');
    if (sniffImage(head) !== image.mediaType) throw bad(`data is not a ${image.mediaType} image`);
    out.push({ mediaType: image.mediaType, data });
  }
  return out;
}

export function sniffImage(b: Buffer): string | null {
  if (b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'image/png';
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  if (b.subarray(0, 4).toString('latin1') === 'GIF8') return 'image/gif';
  if (b.subarray(0, 4).toString('latin1') === 'RIFF' && b.subarray(8, 12).toString('latin1') === 'WEBP') return 'image/webp';
  return null;
}

/** The app's profile with identifier `userId`, created (and announced) when new. */
async function resolveProfile(ctx: Ctx, app: App, userId: string): Promise<Profile> {
  const find = () =>
    ctx.db.selectFrom('profiles').selectAll().where('appId', '=', app.id).where('identifier', '=', userId).where('status', '=', 'active').executeTakeFirst();
  const existing = await find();
  if (existing) return existing;
  try {
    return await insertProfile(ctx, app, { identifier: userId });
  } catch (err) {
    // A concurrent first run of the same user created it.
    const winner = isUniqueViolation(err) ? await find() : undefined;
    if (!winner) throw err;
    return winner;
  }
}

/**
 * The named session (created when unknown) or a new one, locked for this transaction, so
 * one session's runs are numbered (run_order) in the order they commit.
 */
async function resolveSession(ctx: Ctx, tx: Tx, app: App, profile: Profile, sessionId: string | undefined): Promise<string> {
  const id = sessionId ?? newId('session');
  const now = ctx.now();
  const created = await tx
    .insertInto('sessions')
    .values({ id, organizationId: app.organizationId, appId: app.id, type: 'single', profileId: profile.id, lastInstanceId: null, turns: 0, createdAt: now, lastActiveAt: now })
    .onConflict((oc) => oc.columns(['organizationId', 'id']).doNothing())
    .returning('id')
    .executeTakeFirst();
  if (created) {
    // A deleted session of this id may still be ending a turn: the new one must not queue behind it.
    const ending = await tx.selectFrom('instances').select('id').where('organizationId', '=', app.organizationId).where('sessionId', '=', id).where('status', 'in', OPEN).limit(1).executeTakeFirst();
    if (ending) throw new ConflictError(`Session "${id}" was deleted and its last turn is still stopping; try again in a few seconds, or use another sessionId.`);
  }
  const session = await tx.selectFrom('sessions').selectAll().where('organizationId', '=', app.organizationId).where('id', '=', id).forUpdate().executeTakeFirstOrThrow();
  const conflict = sessionConflict(app, session, (owner) => owner === profile.id);
  if (conflict) throw conflict;
  if (session.type === 'single' && session.profileId === null) {
    // Made by session/create: its first run decides whose conversation it is.
    await tx.updateTable('sessions').set({ profileId: profile.id }).where('organizationId', '=', app.organizationId).where('id', '=', id).execute();
  }
  return id;
}

/** Why a run of `app` may not use `session` (`isRunner` tells whether a profile is the runner's), or null. */
function sessionConflict(app: App, session: Pick<Session, 'id' | 'appId' | 'type' | 'profileId'>, isRunner: (profileId: string) => boolean): ConflictError | null {
  const id = session.id;
  if (session.appId !== app.id) return new ConflictError(`Session "${id}" belongs to another app; use another sessionId.`);
  if (session.type === 'single') {
    if (session.profileId !== null && !isRunner(session.profileId)) return new ConflictError(`Session "${id}" is another user's conversation; use another sessionId.`);
  } else if (app.type === 'claude') {
    return new ConflictError(`Session "${id}" is a group session; claude apps run only single sessions.`);
  }
  return null;
}

/**
 * The checks of resolveSession, made before the run creates anything (the user's profile, on a
 * first run). resolveSession makes them again in the run's transaction, where they hold.
 */
async function checkSessionFor(ctx: Ctx, app: App, userId: string, sessionId: string): Promise<void> {
  const session = await ctx.db
    .selectFrom('sessions')
    .leftJoin('profiles', 'profiles.id', 'sessions.profileId')
    .select(['sessions.id', 'sessions.appId', 'sessions.type', 'sessions.profileId', 'profiles.identifier', 'profiles.appId as profileAppId'])
    .where('sessions.organizationId', '=', app.organizationId)
    .where('sessions.id', '=', sessionId)
    .executeTakeFirst();
  if (!session) return;
  const conflict = sessionConflict(app, session, () => session.identifier === userId && session.profileAppId === app.id);
  if (conflict) throw conflict;
}

/**
 * One unit per run, charged to the periods holding `now` (the instance's createdAt, so a
 * refund finds them). The group's own period is bumped only while under the limit (one
 * conditional upsert: concurrent runs queue on the counter row and each sees the count the
 * previous one left), the other periods always, so a group that later changes its reset
 * period reads a true count. No row back: over the limit, and the transaction rolls back.
 */
async function charge(tx: Tx, profileId: string, accessGroupId: string, now: Date): Promise<void> {
  const group = await tx.selectFrom('accessGroups').select(['limit', 'limitReset', 'limitMessage']).where('id', '=', accessGroupId).executeTakeFirst();
  // Cannot happen while the profile row is locked (a group's deletion moves its profiles
  // first); never read as "unlimited" if it did.
  if (!group) throw new ConflictError("The profile's access group changed while this run started; run again.", 'access_group_changed');
  const { limit, limitReset: guarded } = group;
  const over = () => new LimitExceededError(group.limitMessage ?? DEFAULT_LIMIT_MESSAGE);
  if (limit !== null && limit <= 0) throw over();
  for (const period of counterOrder(guarded)) {
    const check = limit !== null && period === guarded;
    const res = await sql<{ used: number }>`
      insert into usage_counters (profile_id, period, period_start, used)
      values (${profileId}, ${period}, ${periodStart(period, now)}, 1)
      on conflict (profile_id, period, period_start) do update set used = usage_counters.used + 1
      ${check ? sql`where usage_counters.used < ${limit}` : sql``}
      returning used`.execute(tx);
    if (check && res.rows.length === 0) throw over();
  }
}
