/**
 * Bounded background work fed one task at a time (from an array or a stream): `run` waits
 * while `limit` tasks are running, then starts `fn`; `drain` waits for all of them and
 * rejects with the first failure. After a failure `run` rejects at once, so the producer
 * stops starting work.
 */
export class TaskLimiter {
  private readonly running = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly limit: number) {}

  async run(fn: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.limit && !this.failure) await Promise.race(this.running);
    if (this.failure) throw this.failure.error;
    const task: Promise<void> = fn()
      .catch((error: unknown) => {
        this.failure ??= { error };
      })
      .finally(() => this.running.delete(task));
    this.running.add(task);
  }

  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running);
    if (this.failure) throw this.failure.error;
  }
}

/**
 * Runs `fn` over `items` with at most `limit` calls at once. After a failure no new call
 * starts; it settles once the calls already running have ended, rejecting with the first
 * failure. (For work that arrives from a stream, use TaskLimiter.)
 */
export async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const lane = async () => {
    while (!failure && next < items.length) {
      const i = next++;
      try {
        await fn(items[i], i);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failure) throw failure.error;
}
