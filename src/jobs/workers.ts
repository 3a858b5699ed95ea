import type { Ctx } from '../core/context.js';
import { purgeApp } from '../core/apps.js';
import { purgeProfile } from '../core/profiles.js';

/** Thin handlers: each job is one call into core. */
export async function registerWorkers(ctx: Ctx): Promise<void> {
  await ctx.queue.work('delete-app', (d) => purgeApp(ctx, String(d.appId)));
  await ctx.queue.work('delete-profile', (d) => purgeProfile(ctx, String(d.profileId)));
}
