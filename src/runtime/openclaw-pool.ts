/**
 * The pool of OpenClaw gateways (one per trust domain key), with a cap on how many run at
 * once: each idles at ~1.2 GB. Gateways start on demand, idle ones are stopped, a crashed
 * one is dropped and replaced by the next turn that needs it. See openclaw-gateway.ts for
 * one gateway's process.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { untilAborted } from '../core/concurrency.js';
import { Gateway, type GatewayPoolOptions } from './openclaw-gateway.js';

export type { GatewayPoolOptions } from './openclaw-gateway.js';

/** What a turn holds while it uses a gateway; `release()` lets the pool stop it when idle. */
export interface GatewayLease {
  gateway: Gateway;
  release(): void;
}

export class GatewayPool {
  private readonly gateways = new Map<string, Gateway>();
  private readonly starting = new Map<string, Promise<Gateway>>();
  private readonly waiters: (() => void)[] = [];
  private closed = false;

  constructor(readonly opts: GatewayPoolOptions) {}

  /**
   * The running gateway for `key`, started (or restarted after a crash) when needed. Waiting
   * for a free slot or a starting gateway ends as soon as `signal` aborts (rejecting with its
   * reason); a gateway started meanwhile stays up for the next turn and idles out if none
   * comes.
   */
  async acquire(key: string, signal?: AbortSignal): Promise<GatewayLease> {
    for (;;) {
      signal?.throwIfAborted();
      if (this.closed) throw new Error('The OpenClaw gateway pool is closed.');
      const running = this.gateways.get(key);
      if (running?.alive) return this.lease(running);
      if (running) this.gateways.delete(key);
      const pending = this.starting.get(key);
      if (pending) {
        await untilAborted(pending.catch(() => {}), signal);
        continue;
      }
      if (this.gateways.size + this.starting.size >= (this.opts.maxGateways ?? 2)) {
        const idle = [...this.gateways.values()].filter((g) => g.leases === 0).sort((a, b) => a.lastUsed - b.lastUsed)[0];
        if (idle) await this.retire(idle);
        else await untilAborted(new Promise<void>((resolve) => this.waiters.push(resolve)), signal);
        continue;
      }
      const start = this.startGateway(key).finally(() => {
        this.starting.delete(key);
        this.wake();
      });
      this.starting.set(key, start);
      return this.lease(await untilAborted(start, signal, (gateway) => this.lease(gateway).release()));
    }
  }

  /** Gateways running now (for tests and metrics). */
  get running(): Gateway[] {
    return [...this.gateways.values()].filter((g) => g.alive);
  }

  /** Stops `key`'s gateway and deletes its directory: every transcript and workspace in it. */
  async forget(key: string): Promise<void> {
    const pending = this.starting.get(key);
    if (pending) await pending.catch(() => {});
    const gateway = this.gateways.get(key);
    if (gateway) await this.retire(gateway);
    await fs.rm(this.dirOf(key), { recursive: true, force: true });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.starting.values()]);
    await Promise.all([...this.gateways.values()].map((g) => this.retire(g)));
    this.wake();
  }

  private async startGateway(key: string): Promise<Gateway> {
    const dir = this.dirOf(key);
    let lastError: unknown;
    // A second try covers a port taken between choosing and binding it.
    for (let attempt = 0; attempt < 2; attempt++) {
      const gateway = new Gateway(key, dir, await freePort(), this.opts);
      try {
        await gateway.start();
      } catch (err) {
        lastError = err;
        if ((err as { code?: string }).code === 'config') break;
        continue;
      }
      this.gateways.set(key, gateway);
      gateway.onExit(() => {
        clearTimeout(gateway.idleTimer);
        if (this.gateways.get(key) === gateway) this.gateways.delete(key);
        this.wake();
      });
      return gateway;
    }
    throw lastError;
  }

  private dirOf(key: string): string {
    return path.join(this.opts.dataDir, 'openclaw', createHash('sha256').update(key).digest('hex').slice(0, 32));
  }

  private lease(gateway: Gateway): GatewayLease {
    gateway.leases++;
    gateway.lastUsed = Date.now();
    clearTimeout(gateway.idleTimer);
    let released = false;
    return {
      gateway,
      release: () => {
        if (released) return;
        released = true;
        gateway.leases--;
        gateway.lastUsed = Date.now();
        if (gateway.leases > 0) return;
        gateway.idleTimer = setTimeout(() => void this.retire(gateway), this.opts.idleTimeoutMs ?? 600_000);
        gateway.idleTimer.unref();
        this.wake();
      },
    };
  }

  private async retire(gateway: Gateway): Promise<void> {
    clearTimeout(gateway.idleTimer);
    if (this.gateways.get(gateway.key) === gateway) this.gateways.delete(gateway.key);
    await gateway.stop();
    this.wake();
  }

  private wake(): void {
    for (const resolve of this.waiters.splice(0)) resolve();
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
