import type { AccessGroup } from '../storage/schema.js';
import type { Db, Tx } from '../storage/db.js';

export type Period = 'daily' | 'monthly' | 'yearly';
export const PERIODS: readonly Period[] = ['daily', 'monthly', 'yearly'];

/** Start of the calendar period (UTC) that contains `at`. */
export function periodStart(period: Period, at: Date): Date {
  const y = at.getUTCFullYear();
  const m = at.getUTCMonth();
  switch (period) {
    case 'daily':
      return new Date(Date.UTC(y, m, at.getUTCDate()));
    case 'monthly':
      return new Date(Date.UTC(y, m, 1));
    case 'yearly':
      return new Date(Date.UTC(y, 0, 1));
  }
}

export function nextPeriodStart(period: Period, at: Date): Date {
  const start = periodStart(period, at);
  switch (period) {
    case 'daily':
      return new Date(start.getTime() + 86_400_000);
    case 'monthly':
      return new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1));
    case 'yearly':
      return new Date(Date.UTC(start.getUTCFullYear() + 1, 0, 1));
  }
}

export interface Usage {
  used: number;
  limit: number | null;
  resetsAt: string | null;
}

/** Usage of several profiles in one query: profileId → runs in its group's current period. */
export async function usageOf(
  db: Db,
  profiles: { id: string; accessGroupId: string }[],
  groups: Map<string, Pick<AccessGroup, 'limit' | 'limitReset'>>,
  now: Date,
): Promise<Map<string, Usage>> {
  const out = new Map<string, Usage>();
  if (profiles.length === 0) return out;
  const rows = await db
    .selectFrom('usageCounters')
    .select(['profileId', 'period', 'periodStart', 'used'])
    .where('profileId', 'in', profiles.map((p) => p.id))
    .where((eb) => eb.or(PERIODS.map((p) => eb.and([eb('period', '=', p), eb('periodStart', '=', periodStart(p, now))]))))
    .execute();
  for (const p of profiles) {
    const group = groups.get(p.accessGroupId);
    const period = group?.limitReset ?? 'monthly';
    const row = rows.find((r) => r.profileId === p.id && r.period === period);
    const limit = group?.limit ?? null;
    out.set(p.id, {
      used: row?.used ?? 0,
      limit,
      resetsAt: limit === null ? null : nextPeriodStart(period, now).toISOString(),
    });
  }
  return out;
}

/**
 * The order a run's counters are locked in: its group's own period first, then the others.
 * Every transaction that changes counters (a charge, a refund) takes them in this order, so
 * none waits on another in a cycle.
 */
export function counterOrder(guarded: Period): Period[] {
  return [guarded, ...PERIODS.filter((p) => p !== guarded)];
}

/**
 * Gives back the unit a run was charged at `chargedAt`: a queued run stopped before it
 * started never ran, so it does not count toward its profile's limit.
 */
export async function refundRun(tx: Tx, profileId: string, chargedAt: Date): Promise<void> {
  const group = await tx
    .selectFrom('profiles')
    .innerJoin('accessGroups', 'accessGroups.id', 'profiles.accessGroupId')
    .select('accessGroups.limitReset')
    .where('profiles.id', '=', profileId)
    .executeTakeFirst();
  for (const period of counterOrder(group?.limitReset ?? 'monthly')) {
    await tx
      .updateTable('usageCounters')
      .set((eb) => ({ used: eb('used', '-', 1) }))
      .where('profileId', '=', profileId)
      .where('period', '=', period)
      .where('periodStart', '=', periodStart(period, chargedAt))
      .where('used', '>', 0)
      .execute();
  }
}
