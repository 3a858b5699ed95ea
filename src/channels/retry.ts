import type { Config } from '../config.js';

/**
 * The retry schedule of every outbound delivery (CONTRACT §9, "Webhooks and channels"):
 * retry n comes base·2^(n−1) after the previous attempt (5 s, 10 s, 20 s, … with the default
 * base), capped at 1 h, until the window (24 h) since the first attempt has passed.
 *
 * Each attempt is its own job, sent with `startAfter` and carrying the attempt number and the
 * first attempt's time, so the schedule is exactly this function and survives restarts.
 */

export const MAX_RETRY_DELAY_MS = 60 * 60 * 1000;

export type RetryConfig = Pick<Config, 'webhookRetryBaseMs' | 'webhookRetryWindowMs'>;

/** What an attempt job carries besides its subject. */
export interface AttemptData {
  /** 1 for the first attempt. */
  attempt: number;
  /** ISO time of the first attempt; absent on the first attempt's own job. */
  firstAttemptAt?: string;
}

/** The wait before retry `n` (n ≥ 1: the attempt after failed attempt n). */
export function retryDelayMs(n: number, baseMs: number): number {
  return Math.min(baseMs * 2 ** (n - 1), MAX_RETRY_DELAY_MS);
}

/**
 * After attempt `failed.attempt` failed at `failedAt`: the next attempt's job data and when it
 * may start, or null when that would fall past the window (give up).
 */
export function nextAttempt(config: RetryConfig, failed: AttemptData, failedAt: Date): { data: Required<AttemptData>; startAfter: Date } | null {
  const first = failed.firstAttemptAt ? new Date(failed.firstAttemptAt) : failedAt;
  const startAfter = new Date(failedAt.getTime() + retryDelayMs(failed.attempt, config.webhookRetryBaseMs));
  if (startAfter.getTime() - first.getTime() > config.webhookRetryWindowMs) return null;
  return { data: { attempt: failed.attempt + 1, firstAttemptAt: first.toISOString() }, startAfter };
}

/** Reads the attempt fields of a job's data (jobs of older shapes count as first attempts). */
export function attemptOf(data: Record<string, unknown>): AttemptData {
  const attempt = typeof data.attempt === 'number' && data.attempt >= 1 ? data.attempt : 1;
  return { attempt, ...(typeof data.firstAttemptAt === 'string' ? { firstAttemptAt: data.firstAttemptAt } : {}) };
}
