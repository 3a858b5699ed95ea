import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Ctx } from '../core/context.js';
import { appendTurnEvents } from '../core/events.js';
import { randomBase62 } from '../core/ids.js';
import { carriedPrompt, claimInstance, finalizeInstance, reapRuns, renewLease, type Outcome } from '../core/runs.js';
import type { Tx } from '../storage/db.js';
import type { Instance, RunImage } from '../storage/schema.js';
import type { TurnImage } from './claude.js';
import { runClaude } from './claude-runtime.js';
import { ZERO_USAGE, type RuntimeEvent, type Usage } from './events.js';
import { fetchImage } from './fetch-image.js';
import { closeOpenclawPool, runOpenclaw } from './openclaw-runtime.js';
import { TurnError, type Runtime, type TurnOutcome } from './turn.js';
import { commitRun, materialize, scan, type WorkFile, type Workspace } from './workspace.js';

/**
 * The worker side of a run (src/runtime/README.md, "Runs"): claim the instance with a lease,
 * materialize the profile's files, run the turn while storing its events, then in one
 * transaction commit the changed files as a state, keep the runtime's state, end the
 * instance and start the session's next one.
 */

/** Runtimes by app type. */
export const runtimes: Record<string, Runtime> = { claude: runClaude, openclaw: runOpenclaw };

type EndReason = 'stop' | 'shutdown' | 'lost';

interface LocalRun {
  end(why: EndReason): void;
}

interface RunnerState {
  workerId: string;
  runs: Map<string, LocalRun>;
  active: Set<Promise<void>>;
  cleanups: (() => void)[];
  shuttingDown: boolean;
}

const runners = new WeakMap<Ctx, RunnerState>();

function runnerOf(ctx: Ctx): RunnerState {
  let state = runners.get(ctx);
  if (!state) {
    state = { workerId: `${os.hostname()}:${process.pid}:${randomBase62(6)}`, runs: new Map(), active: new Set(), cleanups: [], shuttingDown: false };
    runners.set(ctx, state);
  }
  return state;
}

/** Registers `runConcurrency` run workers, the stop listener and the reaper (worker roles). */
export async function startRunWorkers(ctx: Ctx): Promise<void> {
  const state = runnerOf(ctx);
  state.cleanups.push(ctx.events.on('stop', (id) => state.runs.get(id)?.end('stop')));
  if (ctx.config.runConcurrency > 0) {
    // Polling is only the fallback: a queued run wakes the workers through the `jobs` signal.
    // One worker looks every 2 s, the others every 5 s: on PGlite each look is a query of a
    // few milliseconds, the most of what an idle server spends.
    for (let i = 0; i < ctx.config.runConcurrency; i++) {
      await ctx.queue.work('run-instance', (d) => runInstance(ctx, String(d.instanceId)), { pollingIntervalSeconds: i === 0 ? 2 : 5 });
    }
  }
  let reaping: Promise<unknown> | undefined;
  const period = Math.min(10_000, Math.max(250, ctx.config.runLeaseSeconds * 250));
  const timer = setInterval(() => {
    reaping ??= reapRuns(ctx)
      .then(({ failed, requeued }) => {
        if (failed) console.warn(`[runs] ${failed} turn(s) whose worker went silent for ${ctx.config.runLeaseSeconds} s ended failed`);
        if (requeued) console.warn(`[runs] ${requeued} queued turn(s) whose job was lost were queued again`);
      })
      .catch((err) => console.error('[runs] reaper:', (err as Error).message))
      .finally(() => (reaping = undefined));
  }, period);
  timer.unref();
  state.cleanups.push(() => clearInterval(timer));
}

/** Ends this process's turns (they end `failed`, saying why) and waits for them to be recorded. */
export async function stopRunWorkers(ctx: Ctx): Promise<void> {
  const state = runners.get(ctx);
  if (!state) return;
  state.shuttingDown = true;
  for (const cleanup of state.cleanups.splice(0)) cleanup();
  for (const run of state.runs.values()) run.end('shutdown');
  await Promise.allSettled([...state.active]);
  await closeOpenclawPool(ctx);
}

/** The run-instance job. */
export async function runInstance(ctx: Ctx, instanceId: string): Promise<void> {
  const state = runnerOf(ctx);
  // Left queued: the reaper re-sends its job to a live worker.
  if (state.shuttingDown) return;
  const instance = await claimInstance(ctx, instanceId, state.workerId);
  if (!instance) return;
  const done = execute(ctx, state, instance);
  state.active.add(done);
  try {
    await done;
  } finally {
    state.active.delete(done);
  }
}

async function execute(ctx: Ctx, state: RunnerState, instance: Instance): Promise<void> {
  const abort = new AbortController();
  let why: EndReason | undefined;
  const local: LocalRun = {
    end(reason) {
      why ??= reason;
      abort.abort();
    },
  };
  state.runs.set(instance.id, local);
  const writer = new EventWriter(ctx, instance.id, state.workerId, () => local.end('lost'));
  const renew = setInterval(() => {
    renewLease(ctx, instance.id, state.workerId).then(
      (r) => (r === null ? local.end('lost') : r.stopRequested ? local.end('stop') : undefined),
      () => {},
    );
  }, renewEveryMs(ctx.config.runLeaseSeconds));
  if (instance.stopRequested) local.end('stop');
  const root = turnDirectory(ctx, instance);
  // The instance's own, not the session's: a reaped turn's runtime may still be exiting (and
  // writing there) while the session's next turn starts.
  const scratch = path.join(ctx.config.dataDir, 'runs', `${instance.id}-home`);
  let ws: Workspace | undefined;
  let after: Map<string, WorkFile> | undefined;
  let turn: TurnOutcome | undefined;
  let outcome: Outcome;
  try {
    const app = await ctx.db.selectFrom('apps').selectAll().where('id', '=', instance.appId).executeTakeFirstOrThrow();
    const runtime = runtimes[app.type];
    if (!runtime) throw new TurnError(`This server has no runtime for ${app.type} apps.`, 'not_configured');
    await fs.rm(root, { recursive: true, force: true }); // a turn of this session that died before it cleaned up
    ws = await materialize(ctx, instance.profileId!, path.join(root, 'work'));
    const images = await resolveImages(ctx, instance.images ?? [], abort.signal);
    const carried = await carriedInputs(ctx, instance);
    const prompt = carriedPrompt(carried, instance.input ?? '');
    turn = await runtime({ ctx, instance, app, cwd: ws.cwd, scratch, prompt, images, abortSignal: abort.signal, onEvent: writer.push });
    // A turn that ended without a word has no output, as one stopped while queued (null, not "").
    const output = turn.status !== 'completed' && turn.output === '' ? null : turn.output;
    outcome = { status: turn.status, output, error: turn.error, usage: turn.usage, conversation: { inputKept: turn.inputKept, carriedUsed: carried.length } };
    if (why === 'shutdown' && turn.status === 'stopped') {
      outcome = failedOutcome(new TurnError('The server shut down during the turn; run it again.', 'shutdown'), output, turn.usage);
    }
    try {
      after = await scan(ws, ctx.config.maxBundleBytes);
    } catch (err) {
      outcome = failedOutcome(new TurnError((err as Error).message, 'files_not_saved'), output, turn.usage);
    }
  } catch (err) {
    // Stopped while it was being prepared (its images fetched, say): stopped, not failed.
    const stopped: Outcome = { status: 'stopped', output: null, error: null, usage: { ...ZERO_USAGE }, conversation: { inputKept: false, carriedUsed: 0 } };
    outcome = why === 'stop' ? stopped : failedOutcome(err, null);
  } finally {
    clearInterval(renew);
  }
  await writer.drain();
  // The turn's files are in memory now (scan). Its directories go before the final transaction:
  // that commit starts the session's next turn, which sets `root` up afresh. Only while this
  // worker still holds the instance: a turn reaped meanwhile leaves `root` alone, as the next
  // turn may be running there already (it removes what a turn left behind before it starts).
  await fs.rm(scratch, { recursive: true, force: true }).catch(() => {});
  if (await renewLease(ctx, instance.id, state.workerId).catch(() => null)) await fs.rm(root, { recursive: true, force: true }).catch(() => {});
  try {
    await record(ctx, state, instance, outcome, ws, after, turn);
  } finally {
    state.runs.delete(instance.id);
  }
}

/**
 * Where a turn runs: one directory per session, the same for each of its turns (a session's
 * turns run one at a time). Claude Code ties a conversation to its working directory: from a
 * new path each turn, it would tell the model every time that the project's instruction files
 * (CLAUDE.md) moved and had to be read again.
 */
function turnDirectory(ctx: Ctx, instance: Instance): string {
  const name = instance.sessionId ? `session-${createHash('sha256').update(`${instance.organizationId}\0${instance.sessionId}`).digest('hex').slice(0, 32)}` : instance.id;
  return path.join(ctx.config.dataDir, 'runs', name);
}

/** A third of the lease, and at most 5 s: the renewal is also how a stop reaches a worker whose LISTEN connection is down. */
function renewEveryMs(leaseSeconds: number): number {
  return Math.max(200, Math.min(5_000, (leaseSeconds * 1000) / 3));
}

/** Tokens a turn used are counted even when it ends failed. */
function failedOutcome(err: unknown, output: string | null, usage: Usage = { ...ZERO_USAGE }): Outcome {
  const message = err instanceof Error ? err.message : String(err);
  const code = err instanceof TurnError ? err.code : 'runtime_error';
  return { status: 'failed', output, error: message, usage, events: [{ type: 'error', data: { message, code } }] };
}

class LostInstance extends Error {}

/**
 * The final transaction; if saving the files fails, the instance still ends (failed, saying so).
 * A worker that no longer holds the instance (reaped: it had ended already) records nothing.
 */
async function record(ctx: Ctx, state: RunnerState, instance: Instance, outcome: Outcome, ws: Workspace | undefined, after: Map<string, WorkFile> | undefined, turn: TurnOutcome | undefined): Promise<void> {
  const guard = { workerId: state.workerId };
  const end = (withFiles: boolean, o: Outcome) =>
    ctx.events.transaction(async (tx, signal) => {
      let stateId = ws?.headStateId ?? null;
      // A profile being deleted keeps no files: its turn ends as it ended (stopped), unsaved.
      const keep = withFiles && ws && after && (await isActiveProfile(tx, instance.profileId!));
      if (keep) stateId = (await commitRun(ctx, tx, ws, after, instance.profileId!)) ?? stateId;
      await turn?.persist?.(tx);
      if (!(await finalizeInstance(ctx, tx, signal, instance.id, { ...o, stateId }, guard))) throw new LostInstance();
    });
  try {
    await end(true, outcome);
  } catch (err) {
    if (err instanceof LostInstance) return; // reaped meanwhile: it has ended already
    const message = `The turn ran, but its files could not be saved: ${(err as Error).message}`;
    await end(false, { ...outcome, status: 'failed', error: message, events: [...(outcome.events ?? []), { type: 'error', data: { message, code: 'files_not_saved' } }] }).catch((e) => {
      if (!(e instanceof LostInstance)) console.error('[runs] could not record instance', instance.id, (e as Error).message);
    });
  }
}

/** The `{url}` images fetched (at once, each within its own time limit), the others as given; a stop ends the fetches. */
async function resolveImages(ctx: Ctx, images: RunImage[], signal: AbortSignal): Promise<TurnImage[]> {
  return Promise.all(
    images.map(async (image) => {
      if (!('url' in image)) return image;
      try {
        return await fetchImage(ctx.config, image.url, signal);
      } catch (err) {
        throw new TurnError((err as Error).message, 'image_unavailable');
      }
    }),
  );
}

/** The inputs the session carries for its next turn (runs.ts, finalizeInstance). */
async function carriedInputs(ctx: Ctx, instance: Instance): Promise<string[]> {
  if (!instance.sessionId) return [];
  const row = await ctx.db
    .selectFrom('sessions')
    .select('carriedInputs')
    .where('organizationId', '=', instance.organizationId)
    .where('id', '=', instance.sessionId)
    .executeTakeFirst();
  return row?.carriedInputs ?? [];
}

/**
 * Stores a turn's events as they come, in one transaction per batch: while a batch is being
 * written the next ones gather, so a fast stream costs few transactions and a slow one is
 * written at once. Only while this worker still holds the instance.
 */
class EventWriter {
  private pending: (RuntimeEvent & { createdAt: Date })[] = [];
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly ctx: Ctx,
    private readonly instanceId: string,
    private readonly workerId: string,
    private readonly onLost: () => void,
  ) {}

  readonly push = (event: RuntimeEvent): void => {
    // The claim wrote `running` already.
    if (event.type === 'status') return;
    this.pending.push({ ...event, createdAt: new Date() });
    this.kick();
  };

  private kick(): void {
    if (this.flushing) return;
    this.flushing = this.flush().finally(() => {
      this.flushing = undefined;
      if (this.pending.length > 0) this.kick();
    });
  }

  private async flush(): Promise<void> {
    let failures = 0;
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, 500);
      try {
        const held = await appendTurnEvents(this.ctx, this.instanceId, batch, this.workerId);
        failures = 0;
        if (!held) {
          this.pending = [];
          this.onLost();
        }
      } catch (err) {
        if (++failures >= 5) {
          console.error('[runs] dropped events of', this.instanceId, (err as Error).message);
          continue;
        }
        this.pending.unshift(...batch);
        await new Promise((r) => setTimeout(r, 100 * failures));
      }
    }
  }

  async drain(): Promise<void> {
    while (this.flushing) await this.flushing;
  }
}

/** Locks the profile row (its deletion waits for this commit) and tells whether it is active. */
async function isActiveProfile(tx: Tx, profileId: string): Promise<boolean> {
  const p = await tx.selectFrom('profiles').select('status').where('id', '=', profileId).forUpdate().executeTakeFirst();
  return p?.status === 'active';
}
