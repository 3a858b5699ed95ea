import { sql } from 'kysely';
import type { Ctx } from '../core/context.js';

export async function checkHealth(ctx: Ctx): Promise<{ ok: boolean; detail: Record<string, string> }> {
  const detail: Record<string, string> = { database: ctx.database.kind };
  try {
    await sql`select 1`.execute(ctx.db);
  } catch (err) {
    return { ok: false, detail: { ...detail, databaseError: (err as Error).message } };
  }
  detail.blobStore = ctx.blobs.kind;
  try {
    await ctx.blobs.check();
  } catch (err) {
    return { ok: false, detail: { ...detail, blobStoreError: (err as Error).message } };
  }
  return { ok: true, detail };
}
