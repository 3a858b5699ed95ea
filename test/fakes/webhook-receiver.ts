/**
 * A webhook receiver on loopback: records every request exactly as it arrived (method, path,
 * query, headers, raw body bytes), answers 200, or a chosen status for the next N requests,
 * and checks `Harnesslayer-Signature` the way a receiver would.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedHook {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  /** The raw body, as sent. */
  body: string;
  at: number;
  /** The status this receiver answered. */
  status: number;
}

export class WebhookReceiver {
  url = '';
  readonly received: ReceivedHook[] = [];
  private readonly failing = new Map<string, { remaining: number; status: number }>();
  /** Paths whose answers send their status and a first chunk, and never end. */
  private readonly unending = new Set<string>();
  private readonly server: http.Server;

  constructor() {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const url = new URL(req.url ?? '/', 'http://receiver');
        const failing = this.failing.get(url.pathname);
        const status = failing && failing.remaining > 0 ? (failing.remaining--, failing.status) : 200;
        this.received.push({ method: req.method ?? '', path: url.pathname, query: url.searchParams, headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now(), status });
        res.writeHead(status, { 'content-type': 'text/plain' });
        if (this.unending.has(url.pathname)) res.write('ok, and more to come');
        else res.end(status === 200 ? 'ok' : 'failing on purpose');
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The next `times` requests to `path` answer `status`. */
  fail(path: string, times: number, status = 500): void {
    this.failing.set(path, { remaining: times, status });
  }

  /** Answers to `path` send their status line and a first chunk of body, then never end. */
  neverEnd(path: string): void {
    this.unending.add(path);
  }

  /** Requests to `path`, in arrival order. */
  at(path: string): ReceivedHook[] {
    return this.received.filter((r) => r.path === path);
  }
}

/** A receiver's check: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. */
export function verifySignature(secret: string, hook: ReceivedHook): { valid: boolean; t: number } {
  const header = String(hook.headers['harnesslayer-signature'] ?? '');
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!m) return { valid: false, t: NaN };
  const expected = createHmac('sha256', secret).update(`${m[1]}.${hook.body}`).digest();
  return { valid: timingSafeEqual(expected, Buffer.from(m[2], 'hex')), t: Number(m[1]) };
}

export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  return new WebhookReceiver().start();
}
