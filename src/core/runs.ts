import { sql } from 'kysely';
import type { Ctx } from './context.js';
import { appendEvents, withoutNul, type Signal } from './events.js';
import { newId } from './ids.js';
import { appDeletionSteps } from './apps.js';
import { profileDeletionSteps } from './profiles.js';
import { findInstance } from './records.js';
import { FINAL_STATUSES, isFinalStatus, resultEvent, ZERO_USAGE, type FinalStatus, type RuntimeEvent, type Usage } from '../runtime/events.js';
import { refundRun } from './usage.js';
import type { Tx } from '../storage/db.js';
import type { Instance } from '../storage/schema.js';

/**
 * An instance's life after `response/run` queued it (src/runtime/README.md, "Runs"):
 *
 *   queued ──claim──▶ running ──finalize──▶ completed | failed | stopped
 *     └────────stop──────────────────────────────────▶ stopped
 *
 * One session's instances run one at a time in `run_order`: a claim succeeds only for the
 * session's first open instance, and every instance that ends enqueues the session's next
 * one (the chain). Every state change locks the instance row first, then the session row.
 */

export const OPEN = ['queued', 'running'] as const;

/** Steps other subsystems add when an instance ends, in its final transaction (e.g. channel webhooks). */
export const instanceEndedHooks: ((ctx: Ctx, tx: Tx, instance: Instance) => Promise<void>)[] = [];

/** Sends the instance's run-instance job (it wakes idle workers in every process at commit). */
export async function enqueueRun(ctx: Ctx, tx: Tx, instanceId: string): Promise<void> {
  // The job outlives the turn's timeout, so the queue never fails it while the turn runs.
  await ctx.queue.send('run-instance', { instanceId }, { tx, expireInSeconds: ctx.config.runTimeoutSeconds + 120 });
  await tx.updateTable('instances').set({ enqueuedAt: sql`now()` }).where('id', '=', instanceId).execute();
}

/**
 * queued → running for `workerId`, with a lease, if it is the first open instance of its
 * session. Null when it is not queued any more or must wait its turn (the chain restarts it).
 */
export async function claimInstance(ctx: Ctx, instanceId: string, workerId: string): Promise<Instance | null> {
  return ctx.events.transaction(async (tx, signal) => {
    const instance = await tx.selectFrom('instances').selectAll().where('id', '=', instanceId).forUpdate().executeTakeFirst();
    if (!instance || instance.status !== 'queued') return null;
    if (instance.sessionId) {
      // Serializes claims of one session.
      await tx.selectFrom('sessions').select('id').where('organizationId', '=', instance.organizationId).where('id', '=', instance.sessionId).forUpdate().execute();
      const earlier = await tx
        .selectFrom('instances')
        .select('id')
        .where('organizationId', '=', instance.organizationId)
        .where('sessionId', '=', instance.sessionId)
        .where('runOrder', '<', instance.runOrder)
        .where('status', 'in', OPEN)
        .limit(1)
        .executeTakeFirst();
      if (earlier) return null;
    }
    const claimed = await tx
      .updateTable('instances')
      .set({
        status: 'running',
        startedAt: ctx.now(),
        workerId,
        leaseUntil: sql`now() + make_interval(secs => ${ctx.config.runLeaseSeconds})`,
        attempt: sql`attempt + 1`,
      })
      .where('id', '=', instanceId)
      .returningAll()
      .executeTakeFirstOrThrow();
    await appendEvents(tx, signal, instanceId, [{ type: 'status', data: { status: 'running' }, createdAt: ctx.now() }]);
    return claimed;
  });
}

/** Extends the lease; null when the worker lost the instance (ended, or reaped). */
export async function renewLease(ctx: Ctx, instanceId: string, workerId: string): Promise<{ stopRequested: boolean } | null> {
  const row = await ctx.db
    .updateTable('instances')
    .set({ leaseUntil: sql`now() + make_interval(secs => ${ctx.config.runLeaseSeconds})` })
    .where('id', '=', instanceId)
    .where('status', '=', 'running')
    .where('workerId', '=', workerId)
    .returning('stopRequested')
    .executeTakeFirst();
  return row ?? null;
}

export interface Outcome {
  status: FinalStatus;
  output: string | null;
  error: string | null;
  usage: Usage;
  stateId?: string | null;
  /** Written before the `result` event (e.g. the `error` that explains a failure). */
  events?: RuntimeEvent[];
  /**
   * For a turn that ran: whether its prompt reached the model's conversation, and how many of
   * the session's carried inputs it held (see `carriedPrompt`). Absent: it never ran (stopped
   * while queued, reaped).
   */
  conversation?: { inputKept: boolean; carriedUsed: number };
}

/**
 * A turn's prompt: its input, after the inputs of the session's turns that were stopped
 * before the model saw them (CONTRACT §9: a stopped turn stays in the conversation).
 */
export function carriedPrompt(carried: readonly string[], input: string): string {
  if (carried.length === 0) return input;
  const earlier = carried.join('\n\n');
  return `[Earlier messages of the user, stopped before you could see them:]\n${earlier}\n[End of the earlier messages.]\n\n${input}`;
}

/**
 * Ends an open instance in `tx`: final fields, the `result` event (done), the history
 * record, the session's turn count, the hooks, and the session's next queued instance.
 * With `guard`, only while that worker holds it. Null when it was not open (or not held).
 */
export async function finalizeInstance(ctx: Ctx, tx: Tx, signal: Signal, instanceId: string, turnOutcome: Outcome, guard?: { workerId: string }): Promise<Instance | null> {
  // As stored: the instance, its result event and its history record.
  const outcome = { ...turnOutcome, output: withoutNul(turnOutcome.output), error: withoutNul(turnOutcome.error) };
  const now = ctx.now();
  let q = tx
    .updateTable('instances')
    .set({
      status: outcome.status,
      output: outcome.output,
      error: outcome.error,
      inputTokens: outcome.usage.inputTokens,
      outputTokens: outcome.usage.outputTokens,
      costUsd: outcome.usage.costUsd,
      stateId: outcome.stateId ?? null,
      completedAt: now,
      leaseUntil: null,
      // The images were only the turn's input.
      images: null,
    })
    .where('id', '=', instanceId)
    .where('status', 'in', OPEN);
  if (guard) q = q.where('workerId', '=', guard.workerId);
  const instance = await q.returningAll().executeTakeFirst();
  if (!instance) return null;
  const { status, output, error, usage } = outcome;
  await appendEvents(tx, signal, instanceId, [...(outcome.events ?? []), resultEvent({ status, output, error, usage })].map((e) => ({ ...e, createdAt: now })));
  await tx
    .insertInto('history')
    .values({
      id: newId('history'),
      organizationId: instance.organizationId,
      appId: instance.appId,
      instanceId: instance.id,
      channelId: instance.channelId,
      sessionId: instance.sessionId,
      profileId: instance.profileId,
      userId: instance.userId,
      status,
      input: instance.input,
      output,
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      costUsd: usage.costUsd,
      createdAt: now,
    })
    .execute();
  if (instance.sessionId) {
    // A running turn stopped before its input reached the model leaves it to the session's
    // next turn (a queued one stopped was cancelled: nothing carried); a turn whose prompt
    // reached the model delivered the carried inputs it held (new ones go at the end, so
    // inputs carried meanwhile stay).
    const kept = outcome.conversation?.inputKept ?? false;
    const carry = status === 'stopped' && outcome.conversation && !kept && instance.input ? instance.input : null;
    const delivered = kept ? (outcome.conversation?.carriedUsed ?? 0) : 0;
    await tx
      .updateTable('sessions')
      .set({
        turns: sql`turns + 1`,
        lastActiveAt: now,
        ...(carry ? { carriedInputs: sql`array_append(carried_inputs, ${carry}::text)` } : {}),
        ...(delivered > 0 ? { carriedInputs: sql`carried_inputs[${delivered + 1}::int:]` } : {}),
      })
      .where('organizationId', '=', instance.organizationId)
      .where('id', '=', instance.sessionId)
      .execute();
    await startNextInSession(ctx, tx, instance.organizationId, instance.sessionId);
  }
  for (const hook of instanceEndedHooks) await hook(ctx, tx, instance);
  return instance;
}

/** Enqueues the session's first open instance if it is still queued (the chain). */
export async function startNextInSession(ctx: Ctx, tx: Tx, organizationId: string, sessionId: string): Promise<void> {
  const next = await tx
    .selectFrom('instances')
    .select(['id', 'status'])
    .where('organizationId', '=', organizationId)
    .where('sessionId', '=', sessionId)
    .where('status', 'in', OPEN)
    .orderBy('runOrder')
    .limit(1)
    .executeTakeFirst();
  if (next?.status === 'queued') await enqueueRun(ctx, tx, next.id);
}

/** How long `stop` waits for a running instance to end before answering `running`. */
export const STOP_WAIT_MS = 10_000;

/**
 * `response/stop`: a queued instance ends `stopped` at once; a running one is flagged and
 * its worker signalled (any process; the worker also sees the flag when it renews its
 * lease), then the reply waits for it to end; an ended one is left as it is.
 */
export async function stopInstance(ctx: Ctx, organizationId: string, instanceId: string): Promise<{ instanceId: string; status: string }> {
  const found = await findInstance(ctx.db, organizationId, instanceId);
  const status = await ctx.events.transaction(async (tx, signal) => {
    const row = await tx.selectFrom('instances').select(['id', 'status']).where('id', '=', found.id).forUpdate().executeTakeFirstOrThrow();
    return stopOpen(ctx, tx, signal, row);
  });
  return { instanceId: found.id, status: isFinalStatus(status) ? status : ((await statusWithin(ctx, found.id, STOP_WAIT_MS)) ?? status) };
}

/**
 * Stops an instance (locked by the caller): a queued one ends `stopped` at once, and its unit
 * of usage is given back (it never ran); a running one is flagged and its worker signalled
 * (any process; the worker also sees the flag when it renews its lease); an ended one is left
 * as it is. Returns its status now.
 */
export async function stopOpen(ctx: Ctx, tx: Tx, signal: Signal, instance: { id: string; status: string }): Promise<string> {
  if (instance.status === 'queued') {
    const { profileId, createdAt } = await tx.selectFrom('instances').select(['profileId', 'createdAt']).where('id', '=', instance.id).executeTakeFirstOrThrow();
    if (profileId) await refundRun(tx, profileId, createdAt);
    await finalizeInstance(ctx, tx, signal, instance.id, { status: 'stopped', output: null, error: null, usage: { ...ZERO_USAGE } });
    return 'stopped';
  }
  if (instance.status === 'running') {
    await tx.updateTable('instances').set({ stopRequested: true }).where('id', '=', instance.id).execute();
    await signal('stop', instance.id);
  }
  return instance.status;
}

/** The instance's status once it has ended, or when `ms` have passed; null once it is gone. */
async function statusWithin(ctx: Ctx, instanceId: string, ms: number): Promise<string | null> {
  const watch = ctx.events.watch('events', instanceId);
  try {
    const deadline = Date.now() + ms;
    for (;;) {
      const row = await ctx.db.selectFrom('instances').select('status').where('id', '=', instanceId).executeTakeFirst();
      if (!row || isFinalStatus(row.status) || Date.now() >= deadline || ctx.events.isClosed) return row?.status ?? null;
      await watch.wait(deadline - Date.now());
    }
  } finally {
    watch.close();
  }
}

/**
 * The reaper's two sweeps. Running instances whose lease expired (their worker died or hung)
 * end `failed`; queued ones at the head of their session whose job was lost (a worker died
 * before claiming) get a new job. Returns how many instances each sweep handled.
 */
export async function reapRuns(ctx: Ctx): Promise<{ failed: number; requeued: number }> {
  const expired = await ctx.db
    .selectFrom('instances')
    .select('id')
    .where('status', '=', 'running')
    .where('leaseUntil', '<', sql<Date>`now()`)
    .limit(100)
    .execute();
  let failed = 0;
  for (const { id } of expired) {
    await ctx.events.transaction(async (tx, signal) => {
      const row = await tx
        .selectFrom('instances')
        .select(['id', 'leaseUntil'])
        .where('id', '=', id)
        .where('status', '=', 'running')
        .where('leaseUntil', '<', sql<Date>`now()`)
        .forUpdate()
        .executeTakeFirst();
      if (!row) return;
      const message = `The worker running this turn stopped renewing its lease (it expired at ${row.leaseUntil?.toISOString()}); the turn was abandoned. Run it again.`;
      await finalizeInstance(ctx, tx, signal, id, { status: 'failed', output: null, error: message, usage: { ...ZERO_USAGE }, events: [{ type: 'error', data: { message, code: 'worker_lost' } }] });
      failed++;
    });
  }
  const stale = await sql<{ id: string }>`
    select i.id from instances i
     where i.status = 'queued' and i.enqueued_at < now() - make_interval(secs => ${2 * ctx.config.runLeaseSeconds})
       and not exists (select 1 from instances e
                        where e.organization_id = i.organization_id and e.session_id = i.session_id
                          and e.run_order < i.run_order and e.status in ('queued', 'running'))
     limit 100`.execute(ctx.db);
  for (const { id } of stale.rows) {
    await ctx.db.transaction().execute(async (tx) => {
      const row = await tx.selectFrom('instances').select('status').where('id', '=', id).forUpdate().executeTakeFirst();
      if (row?.status === 'queued') await enqueueRun(ctx, tx, id);
    });
  }
  return { failed, requeued: stale.rows.length };
}

/** Instances removed per transaction when a profile is deleted. */
const PURGE_BATCH = 500;

/**
 * Stops the open turns of a profile, an app or one session in `tx`, in run order, each as
 * stopOpen does. Returns the ids of those that were running (they end when their worker
 * sees the stop).
 */
export async function stopOpenTurns(
  ctx: Ctx,
  tx: Tx,
  signal: Signal,
  owner: { profileId: string } | { appId: string } | { organizationId: string; sessionId: string },
): Promise<string[]> {
  let q = tx.selectFrom('instances').select(['id', 'status']).where('status', 'in', OPEN);
  if ('sessionId' in owner) q = q.where('organizationId', '=', owner.organizationId).where('sessionId', '=', owner.sessionId);
  else if ('appId' in owner) q = q.where('appId', '=', owner.appId);
  else q = q.where('profileId', '=', owner.profileId);
  const open = await q.orderBy('runOrder').forUpdate().execute();
  for (const instance of open) await stopOpen(ctx, tx, signal, instance);
  return open.filter((i) => i.status === 'running').map((i) => i.id);
}

/**
 * A deletion job's first step: the open turns of a profile or an app are stopped, as
 * `response/stop` does (each ends `stopped`, with its result event, waking its pollers and
 * streams), waiting up to STOP_WAIT_MS for a running one. One still stopping then makes the
 * step throw, and the job is retried. No turn is left writing files the job then removes.
 */
async function stopTurnsOf(ctx: Ctx, owner: { profileId: string } | { appId: string }): Promise<void> {
  const stopping = await ctx.events.transaction((tx, signal) => stopOpenTurns(ctx, tx, signal, owner));
  for (const id of stopping) {
    const status = await statusWithin(ctx, id, STOP_WAIT_MS);
    const whose = 'profileId' in owner ? `profile ${owner.profileId}` : `app ${owner.appId}`;
    if (status !== null && !isFinalStatus(status)) throw new Error(`A turn of ${whose} (${id}) is still stopping; the deletion job tries again.`);
  }
}

/**
 * The profile deletion job's step for its turns (CONTRACT §7: every record under it goes).
 * Its open turns are stopped first (stopTurnsOf). Then its instances (their events cascade),
 * history and conflicts are deleted. The iMessages that started its turns keep their handle,
 * so a duplicate is still recognized, but not their text.
 */
export async function purgeProfileRuns(ctx: Ctx, profileId: string): Promise<void> {
  await stopTurnsOf(ctx, { profileId });
  // Group sessions outlive the profile: their counts are taken again once its turns are gone.
  const groups = await ctx.db
    .selectFrom('instances as i')
    .innerJoin('sessions as s', (j) => j.onRef('s.organizationId', '=', 'i.organizationId').onRef('s.id', '=', 'i.sessionId'))
    .select(['s.organizationId', 's.id'])
    .where('i.profileId', '=', profileId)
    .where('s.type', '=', 'group')
    .distinct()
    .execute();
  for (;;) {
    const ids = (await ctx.db.selectFrom('instances').select('id').where('profileId', '=', profileId).limit(PURGE_BATCH).execute()).map((i) => i.id);
    if (ids.length === 0) break;
    await ctx.db.transaction().execute(async (tx) => {
      await tx
        .updateTable('sendblueMessages')
        .set({ content: null, mediaUrls: null, replyText: null })
        .where('instanceId', 'in', ids)
        .where('status', 'in', ['replied', 'no_reply', 'failed'])
        .execute();
      await tx.deleteFrom('history').where('instanceId', 'in', ids).execute();
      await tx.deleteFrom('instances').where('id', 'in', ids).execute();
    });
  }
  await ctx.db.deleteFrom('history').where('profileId', '=', profileId).execute();
  await ctx.db.deleteFrom('conflicts').where('profileId', '=', profileId).execute();
  for (const g of groups) await recountSession(ctx, g.organizationId, g.id);
}

/** A session's `turns` (its ended instances) and `lastInstanceId`, counted from its instances. */
async function recountSession(ctx: Ctx, organizationId: string, sessionId: string): Promise<void> {
  await ctx.db.transaction().execute(async (tx) => {
    // Locked first, counted after: a turn of the session ending meanwhile is counted once.
    const locked = await tx.selectFrom('sessions').select('id').where('organizationId', '=', organizationId).where('id', '=', sessionId).forUpdate().executeTakeFirst();
    if (!locked) return;
    await sql`
      update sessions s
         set turns = (select count(*) from instances i
                       where i.organization_id = s.organization_id and i.session_id = s.id and i.status = any(${[...FINAL_STATUSES]}::text[])),
             last_instance_id = (select i.id from instances i
                                  where i.organization_id = s.organization_id and i.session_id = s.id order by i.run_order desc limit 1)
       where s.organization_id = ${organizationId} and s.id = ${sessionId}`.execute(tx);
  });
}
// First: the profile's files are removed only once none of its turns can write them.
profileDeletionSteps.unshift(purgeProfileRuns);
// An app's records cascade from it, but its turns must end first, as a profile's do.
appDeletionSteps.unshift((ctx, appId) => stopTurnsOf(ctx, { appId }));
