import type { Ctx } from '../core/context.js';
import type { JobName } from './queue.js';
import { purgeApp } from '../core/apps.js';
import { purgeProfile } from '../core/profiles.js';
import { processSyncRange, startSync } from '../sync/job.js';
import { materializeSnapshot, type SnapshotSource } from '../core/snapshots.js';
import { startRunWorkers } from '../runtime/runner.js';
import { installChannelHooks } from '../channels/hooks.js';
import { deliverWebhook } from '../channels/deliveries.js';
import { attemptOf } from '../channels/retry.js';
import { processInbound, processReply } from '../channels/sendblue.js';

/**
 * A deletion is never given up: once its attempts so far all failed or died with their worker,
 * it is sent again as a new job an hour later, rather than run out of the queue's retries and
 * leave the app or profile `deleting` for good (each attempt resumes where the last stopped).
 */
const DELETION_ATTEMPTS = 5;
const DELETION_RETRY_MS = 60 * 60 * 1000;

async function retryLater(ctx: Ctx, name: 'delete-app' | 'delete-profile', data: Record<string, unknown>): Promise<void> {
  console.error(`[jobs] ${name} ${JSON.stringify(data)} failed ${DELETION_ATTEMPTS} times; trying again in an hour.`);
  await ctx.queue.send(name, data, { startAfter: new Date(Date.now() + DELETION_RETRY_MS) });
}

/** Thin handlers: each job is one call into core. */
export async function registerWorkers(ctx: Ctx): Promise<void> {
  // A job sent anywhere wakes this process's workers of its name once its transaction commits.
  ctx.events.on('jobs', (name) => ctx.queue.wake(name as JobName));
  await ctx.queue.work('delete-app', (d, { attempt }) => (attempt > DELETION_ATTEMPTS ? retryLater(ctx, 'delete-app', d) : purgeApp(ctx, String(d.appId))));
  await ctx.queue.work('delete-profile', (d, { attempt }) =>
    attempt > DELETION_ATTEMPTS ? retryLater(ctx, 'delete-profile', d) : purgeProfile(ctx, String(d.profileId)),
  );
  await ctx.queue.work('materialize-snapshot', (d, { attempt }) =>
    materializeSnapshot(ctx, { organizationId: String(d.organizationId), stateId: String(d.stateId), source: d.source as SnapshotSource, attempt }),
  );
  await ctx.queue.work('sync-start', (d, { attempt }) => startSync(ctx, String(d.syncId), attempt));
  // Two range jobs at a time per worker: merging is CPU work, the writes are I/O.
  for (let i = 0; i < 2; i++) {
    await ctx.queue.work('sync-range', (d, { attempt }) =>
      processSyncRange(ctx, { syncId: String(d.syncId), after: (d.after as string | null) ?? null, upto: (d.upto as string | null) ?? null, attempt }),
    );
  }
  // Agent turns: `runConcurrency` at a time, the stop listener and the lease reaper.
  await startRunWorkers(ctx);
  // Channels: webhook deliveries (two at a time: an attempt may wait 10 s), iMessages. Failed
  // deliveries come back as jobs scheduled for their backoff time, which wake the workers
  // of the process that scheduled them when due (Queue.send).
  installChannelHooks();
  for (let i = 0; i < 2; i++) await ctx.queue.work('deliver-webhook', (d) => deliverWebhook(ctx, { deliveryId: String(d.deliveryId), ...attemptOf(d) }));
  await ctx.queue.work('sendblue-inbound', (d) => processInbound(ctx, { channelId: String(d.channelId), messageHandle: String(d.messageHandle) }));
  await ctx.queue.work('sendblue-reply', (d) => processReply(ctx, { channelId: String(d.channelId), messageHandle: String(d.messageHandle), ...attemptOf(d) }));
}
