import { appDeletionSteps } from '../core/apps.js';
import type { Ctx } from '../core/context.js';
import { runOpenclawTurn } from './openclaw.js';
import { GatewayPool } from './openclaw-pool.js';
import { TurnError, type TurnOutcome, type TurnRequest } from './turn.js';

/**
 * The `openclaw` runtime in the run pipeline: one gateway pool per server process, one
 * gateway per app (the trust domain: profiles of one app share it, see README.md "Tenancy on
 * a shared gateway"), one OpenClaw conversation per Harnesslayer session and profile — or
 * per session, for a `group` session that every profile of the app may use.
 */
export async function runOpenclaw(req: TurnRequest): Promise<TurnOutcome> {
  const { ctx, instance, app } = req;
  if (!ctx.config.anthropicApiKey) {
    throw new TurnError('ANTHROPIC_API_KEY is not set on the server that ran this turn; openclaw apps cannot run without it.', 'not_configured');
  }
  const session = instance.sessionId
    ? await ctx.db.selectFrom('sessions').select(['type', 'createdAt']).where('organizationId', '=', instance.organizationId).where('id', '=', instance.sessionId).executeTakeFirst()
    : undefined;
  // A session deleted and made again under the same id starts a new conversation: its
  // creation time is part of the key. A turn whose session is gone talks in one of its own.
  const conversation = !session
    ? `${instance.profileId}/${instance.id}`
    : session.type === 'group'
      ? `group/${instance.sessionId}/${session.createdAt.getTime()}`
      : `${instance.profileId}/${instance.sessionId}/${session.createdAt.getTime()}`;
  let inputKept = false; // the gateway took the message (chat.send): it is in its transcript
  const result = await runOpenclawTurn({
    pool: openclawPool(ctx),
    gatewayKey: app.id,
    workspaceDir: req.cwd,
    sessionKey: conversation,
    prompt: req.prompt,
    images: req.images,
    abortSignal: req.abortSignal,
    timeoutMs: ctx.config.runTimeoutSeconds * 1000,
    onEvent: req.onEvent,
    onSent: () => (inputKept = true),
  });
  // No persist step: the gateway keeps the transcript in its state dir under the data dir.
  return { ...result, inputKept };
}

const pools = new WeakMap<Ctx, GatewayPool>();

/** This process's gateways; started lazily, by the first openclaw turn. */
export function openclawPool(ctx: Ctx): GatewayPool {
  let pool = pools.get(ctx);
  if (!pool) {
    pool = new GatewayPool({
      dataDir: ctx.config.dataDir,
      anthropicBaseUrl: ctx.config.anthropicBaseUrl,
      anthropicApiKey: ctx.config.anthropicApiKey ?? '',
      model: ctx.config.openclawModel,
      maxGateways: ctx.config.openclawMaxGateways,
      idleTimeoutMs: ctx.config.openclawIdleSeconds * 1000,
      onLog: ctx.config.logLevel === 'debug' ? (key, line) => console.error(`[openclaw ${key}] ${line}`) : undefined,
    });
    pools.set(ctx, pool);
  }
  return pool;
}

/**
 * Deleting an app deletes its gateway's directory (its users' OpenClaw transcripts and
 * workspace copies) on the worker that runs the deletion job; a gateway running there stops.
 */
appDeletionSteps.push((ctx, appId) => openclawPool(ctx).forget(appId));

/** Stops this process's gateways (at shutdown, after its turns have ended). */
export async function closeOpenclawPool(ctx: Ctx): Promise<void> {
  const pool = pools.get(ctx);
  pools.delete(ctx);
  await pool?.close();
}
