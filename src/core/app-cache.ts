import type { AppView } from './apps.js';
import type { EventHub } from './events.js';

/**
 * In-process memo of app lookups by display id or slug, per organization, so the hot
 * `GET /v1/app/{id}` answers without a database round trip.
 *
 * It stays correct across processes because any change to an organization's app rows drops
 * every entry of that organization:
 * - in the process that wrote, synchronously after the commit (`appsChanged`, called by each write
 *   path), so that process's next read sees its own write;
 * - in every process, by the `apps` signal: on PostgreSQL a trigger on `apps` raises
 *   NOTIFY hl_apps at commit (migration 006), on PGlite there is only this process.
 * A lookup that was in flight when an invalidation came is not stored (`generation`), so an
 * old row read just before a commit never outlives it. Signals raised while the LISTEN
 * connection was down are lost: entries live only within one hub `session`, and none are
 * kept or served while there is no connection. A TTL bounds the harm of a lost signal.
 */
const TTL_MS = 60_000;
export const MAX_ENTRIES = 10_000;

interface Entry {
  value: AppView;
  expires: number;
}

export class AppCache {
  private readonly orgs = new Map<string, Map<string, Entry>>();
  private size = 0;
  private generation = 0;
  private session: number | undefined;

  constructor(private readonly hub: EventHub) {
    hub.on('apps', (organizationId) => this.forget(organizationId));
  }

  /** The value for (organization, ref): from memory, or from `load`, remembered when it is safe. */
  async get(organizationId: string, ref: string, load: () => Promise<AppView>): Promise<AppView> {
    if (!this.current()) return load();
    const hit = this.orgs.get(organizationId)?.get(ref);
    if (hit && hit.expires > Date.now()) return hit.value;
    const generation = this.generation;
    const value = await load();
    if (this.current() && this.generation === generation) this.set(organizationId, ref, value);
    return value;
  }

  /** Drops an organization's entries: call after committing any change to its apps. */
  forget(organizationId: string): void {
    this.generation++;
    const refs = this.orgs.get(organizationId);
    if (!refs) return;
    this.size -= refs.size;
    this.orgs.delete(organizationId);
  }

  /** True while signals arrive; a new session starts empty (what it missed is unknown). */
  private current(): boolean {
    const session = this.hub.session;
    if (session !== this.session) {
      this.session = session;
      this.generation++;
      this.orgs.clear();
      this.size = 0;
    }
    return session !== undefined;
  }

  private set(organizationId: string, ref: string, value: AppView): void {
    let refs = this.orgs.get(organizationId);
    if (refs?.delete(ref)) this.size--;
    // Full: drop whole organizations, the one cached longest first.
    while (this.size >= MAX_ENTRIES) {
      const [oldest, dropped] = this.orgs.entries().next().value!;
      this.size -= dropped.size;
      this.orgs.delete(oldest);
    }
    if (!refs || !this.orgs.has(organizationId)) this.orgs.set(organizationId, (refs = new Map()));
    refs.set(ref, { value, expires: Date.now() + TTL_MS });
    this.size++;
  }
}

const caches = new WeakMap<EventHub, AppCache>();

/** The cache that this hub's signals keep fresh (one per server context). */
export function appCache(hub: EventHub): AppCache {
  let cache = caches.get(hub);
  if (!cache) caches.set(hub, (cache = new AppCache(hub)));
  return cache;
}
