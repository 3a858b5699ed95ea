import { sql } from 'kysely';
import type { Ctx } from '../core/context.js';
import { collectStray } from '../core/gc.js';
import { sweepExpiredUploads } from '../core/uploads.js';
import { purgeExpiredIdempotencyKeys } from '../server/idempotency.js';

const SWEEP_BATCH = 100;
/** How often the store check runs (by one worker: see claimStoreCheck). */
const STORE_CHECK_EVERY_MS = 24 * 60 * 60 * 1000;

/**
 * Upkeep a worker process does besides jobs, every HARNESSLAYER_MAINTENANCE_SECONDS:
 * - uploads past their 24 h and their staged files are removed even when no new upload comes
 *   along to sweep them, and so are idempotency keys past their 24 h. Every worker may sweep;
 *   removing a row twice is harmless;
 * - once a day, one worker checks the store for what nothing references (collectStray).
 * Returns the stop.
 */
export function startMaintenance(ctx: Ctx): () => Promise<void> {
  let running: Promise<void> | undefined;
  const stop = new AbortController();
  const timer = setInterval(() => {
    running ??= (async () => {
      await sweepUploads(ctx);
      await sweepIdempotencyKeys(ctx);
      await checkStore(ctx, stop.signal);
    })().finally(() => (running = undefined));
  }, ctx.config.maintenanceIntervalSeconds * 1000);
  timer.unref();
  return async () => {
    clearInterval(timer);
    stop.abort();
    await running;
  };
}

async function sweepUploads(ctx: Ctx): Promise<void> {
  try {
    while ((await sweepExpiredUploads(ctx, SWEEP_BATCH)) === SWEEP_BATCH);
  } catch (err) {
    console.error('[maintenance] sweeping expired uploads:', (err as Error).message);
  }
}

async function sweepIdempotencyKeys(ctx: Ctx): Promise<void> {
  try {
    while ((await purgeExpiredIdempotencyKeys(ctx, SWEEP_BATCH)) === SWEEP_BATCH);
  } catch (err) {
    console.error('[maintenance] sweeping expired idempotency keys:', (err as Error).message);
  }
}

async function checkStore(ctx: Ctx, signal: AbortSignal): Promise<void> {
  try {
    if (!(await claimStoreCheck(ctx))) return;
    const { rows, files } = await collectStray(ctx, { signal });
    if (rows + files > 0) console.log(`[maintenance] store check: removed ${rows} unreferenced blob rows and ${files} stored blobs no row accounted for`);
  } catch (err) {
    console.error('[maintenance] checking the store (it runs again tomorrow):', (err as Error).message);
  }
}

/**
 * True for the one worker that gets today's store check: the `store-checked-at` setting moves
 * by compare-and-set (ISO times in UTC compare as text), so restarts and other workers wait
 * for the next day.
 */
export async function claimStoreCheck(ctx: Ctx): Promise<boolean> {
  const now = ctx.now();
  const due = new Date(now.getTime() - STORE_CHECK_EVERY_MS).toISOString();
  const claimed = await sql<{ key: string }>`
    insert into settings (key, value) values ('store-checked-at', ${now.toISOString()})
    on conflict (key) do update set value = excluded.value where settings.value <= ${due}
    returning key`.execute(ctx.db);
  return claimed.rows.length > 0;
}
