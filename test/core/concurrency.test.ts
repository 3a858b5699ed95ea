import { describe, expect, it } from 'vitest';
import { eachLimit } from '../../src/core/concurrency.js';

describe('eachLimit', () => {
  it('runs every item once, never more than `limit` at a time', async () => {
    let running = 0;
    let peak = 0;
    const seen: number[] = [];
    await eachLimit([...Array(20).keys()], 3, async (n, i) => {
      expect(i).toBe(n);
      running++;
      peak = Math.max(peak, running);
      await Promise.resolve();
      seen.push(n);
      running--;
    });
    expect(seen.sort((a, b) => a - b)).toEqual([...Array(20).keys()]);
    expect(peak).toBe(3);
  });

  it('starts nothing after a failure, waits for the running calls, and rejects with the first failure', async () => {
    const started: number[] = [];
    let finished = 0;
    const run = eachLimit([0, 1, 2, 3, 4, 5], 2, async (n) => {
      started.push(n);
      if (n === 1) throw new Error('one failed');
      await Promise.resolve();
      finished++;
    });
    await expect(run).rejects.toThrow('one failed');
    // Item 0 was running when item 1 failed: it finished; nothing else started.
    expect(started).toEqual([0, 1]);
    expect(finished).toBe(1);
  });

  it('does nothing for no items', async () => {
    await expect(eachLimit([], 4, async () => Promise.reject(new Error('never')))).resolves.toBeUndefined();
  });
});
