import { describe, expect, it } from 'vitest';
import { AppCache, MAX_ENTRIES } from '../../src/core/app-cache.js';
import type { AppView } from '../../src/core/apps.js';
import type { EventHub } from '../../src/core/events.js';

// The cache's rules on a stand-in hub whose LISTEN session and signals the test drives.

function fakeHub() {
  const listeners: ((payload: string) => void)[] = [];
  const hub = {
    session: 1 as number | undefined,
    on(channel: string, listener: (payload: string) => void) {
      expect(channel).toBe('apps');
      listeners.push(listener);
      return () => {};
    },
    signal: (organizationId: string) => listeners.forEach((l) => l(organizationId)),
  };
  return hub;
}

function setup() {
  const hub = fakeHub();
  const cache = new AppCache(hub as unknown as EventHub);
  let loads = 0;
  const load = (name: string) => async () => {
    loads++;
    return { name } as AppView;
  };
  return { hub, cache, load, loads: () => loads };
}

describe('AppCache', () => {
  it('serves a repeat from memory, per organization', async () => {
    const { cache, load, loads } = setup();
    expect((await cache.get('org-a', 'x', load('a1'))).name).toBe('a1');
    expect((await cache.get('org-a', 'x', load('a2'))).name).toBe('a1');
    expect((await cache.get('org-b', 'x', load('b1'))).name).toBe('b1');
    expect(loads()).toBe(2);
  });

  it('drops an organization on its signal, and only that one', async () => {
    const { hub, cache, load } = setup();
    await cache.get('org-a', 'x', load('a1'));
    await cache.get('org-b', 'x', load('b1'));
    hub.signal('org-a');
    expect((await cache.get('org-a', 'x', load('a2'))).name).toBe('a2');
    expect((await cache.get('org-b', 'x', load('b2'))).name).toBe('b1');
  });

  it('does not keep a value read before an invalidation that came while it was loading', async () => {
    const { cache, load } = setup();
    let finish!: () => void;
    const slow = cache.get('org-a', 'x', async () => {
      await new Promise<void>((resolve) => (finish = resolve));
      return { name: 'old' } as AppView;
    });
    cache.forget('org-a');
    finish();
    expect((await slow).name).toBe('old');
    expect((await cache.get('org-a', 'x', load('new'))).name).toBe('new');
  });

  it('keeps nothing while the hub has no LISTEN connection, and starts empty on a new one', async () => {
    const { hub, cache, load, loads } = setup();
    await cache.get('org-a', 'x', load('s1'));
    hub.session = undefined;
    expect((await cache.get('org-a', 'x', load('down1'))).name).toBe('down1');
    expect((await cache.get('org-a', 'x', load('down2'))).name).toBe('down2');
    hub.session = 2;
    expect((await cache.get('org-a', 'x', load('s2'))).name).toBe('s2');
    expect((await cache.get('org-a', 'x', load('s2-again'))).name).toBe('s2');
    expect(loads()).toBe(4);
  });

  it(`holds at most ${MAX_ENTRIES} entries, dropping the organization cached longest`, async () => {
    const { cache, load, loads } = setup();
    for (let i = 0; i <= MAX_ENTRIES; i++) await cache.get(`org-${i}`, 'x', load(`v${i}`));
    expect(loads()).toBe(MAX_ENTRIES + 1);
    expect((await cache.get(`org-${MAX_ENTRIES}`, 'x', load('again'))).name).toBe(`v${MAX_ENTRIES}`);
    expect((await cache.get('org-0', 'x', load('reloaded'))).name).toBe('reloaded');
  });

  it('does not fill on a load that fails', async () => {
    const { cache, load } = setup();
    await expect(cache.get('org-a', 'x', () => Promise.reject(new Error('not found')))).rejects.toThrow('not found');
    expect((await cache.get('org-a', 'x', load('found'))).name).toBe('found');
  });
});
