import type { Ctx } from '../core/context.js';
import { sweepExpiredUploads } from '../core/uploads.js';

const SWEEP_BATCH = 100;

/**
 * Upkeep a worker process does besides jobs, every HARNESSLAYER_MAINTENANCE_SECONDS: uploads
 * past their 24 h and their staged files are removed even when no new upload comes along to
 * sweep them. Every worker may sweep; removing an upload twice is harmless. Returns the stop.
 */
export function startMaintenance(ctx: Ctx): () => Promise<void> {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    running ??= (async () => {
      while ((await sweepExpiredUploads(ctx, SWEEP_BATCH)) === SWEEP_BATCH);
    })()
      .catch((err: unknown) => console.error('[maintenance] sweeping expired uploads:', (err as Error).message))
      .finally(() => (running = undefined));
  }, ctx.config.maintenanceIntervalSeconds * 1000);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
