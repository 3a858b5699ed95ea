/**
 * A minimal client of the OpenClaw Gateway's WebSocket protocol (v4) on Node 20 with `ws`
 * (the official client packages need Node 22). Frames are JSON: `req {id, method, params}`,
 * `res {id, ok, payload | error}`, `event {event, payload}`. See ../shared/notes/runtimes.md
 * §2.3 for the handshake; docs/gateway/protocol in the `openclaw` package for the methods.
 */
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';

export interface GatewayErrorShape {
  code?: string;
  message?: string;
  retryable?: boolean;
  retryAfterMs?: number;
  details?: { reason?: string; code?: string; [key: string]: unknown };
}

/** A `res` with `ok: false`, or a connection that failed or closed under a call. */
export class GatewayCallError extends Error {
  constructor(
    message: string,
    readonly error: GatewayErrorShape = {},
  ) {
    super(message);
  }
}

export type GatewayEventHandler = (event: string, payload: unknown) => void;

interface Frame {
  type?: string;
  id?: string;
  ok?: boolean;
  payload?: unknown;
  error?: GatewayErrorShape;
  event?: string;
}

const CALL_TIMEOUT_MS = 30_000;
const PROTOCOL = 4;

export class GatewayClient {
  private readonly pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly handlers = new Set<GatewayEventHandler>();
  private closedWith: Error | null = null;
  private readonly closeHandlers = new Set<(err: Error) => void>();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => this.onFrame(String(data)));
    ws.on('close', (code, reason) => this.onClosed(new GatewayCallError(`The gateway connection closed (${code} ${String(reason)}).`, { code: 'CLOSED' })));
    ws.on('error', (err) => this.onClosed(new GatewayCallError(`The gateway connection failed: ${err.message}`, { code: 'CLOSED' })));
  }

  /**
   * Opens a connection and completes the handshake as the trusted loopback backend
   * (shared token, no device key), with the `tool-events` capability so tool calls arrive
   * as events. Rejects with a GatewayCallError; `startup-sidecars` is retryable.
   */
  static connect(url: string, token: string, timeoutMs = CALL_TIMEOUT_MS): Promise<GatewayClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { maxPayload: 32 * 1024 * 1024 });
      const client = new GatewayClient(ws);
      const fail = (err: Error) => {
        clearTimeout(timer);
        ws.terminate();
        reject(err);
      };
      const timer = setTimeout(() => fail(new GatewayCallError('The gateway did not answer the handshake in time.', { code: 'TIMEOUT' })), timeoutMs);
      client.onClose(fail);
      const off = client.onEvent((event) => {
        if (event !== 'connect.challenge') return;
        off();
        client
          .call('connect', {
            minProtocol: PROTOCOL,
            maxProtocol: PROTOCOL,
            client: { id: 'gateway-client', version: '0.1.0', platform: process.platform, mode: 'backend' },
            role: 'operator',
            scopes: ['operator.read', 'operator.write', 'operator.admin'],
            caps: ['tool-events'],
            auth: { token },
            locale: 'en-US',
            userAgent: 'harnesslayer',
          })
          .then(() => {
            clearTimeout(timer);
            client.closeHandlers.delete(fail);
            resolve(client);
          }, fail);
      });
    });
  }

  /** Sends a request; resolves with its payload, rejects with GatewayCallError. */
  call<T = unknown>(method: string, params: object, timeoutMs = CALL_TIMEOUT_MS): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = randomUUID();
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new GatewayCallError(`The gateway did not answer ${method} in time.`, { code: 'TIMEOUT' }));
      }, timeoutMs);
      this.pending.set(id, { resolve: (v) => resolve(v as T), reject, timer });
      this.ws.send(JSON.stringify({ type: 'req', id, method, params }));
    });
  }

  onEvent(handler: GatewayEventHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  /** Called once when the connection ends (at once if it already has). */
  onClose(handler: (err: Error) => void): () => void {
    if (this.closedWith) handler(this.closedWith);
    else this.closeHandlers.add(handler);
    return () => this.closeHandlers.delete(handler);
  }

  get closed(): boolean {
    return this.closedWith !== null;
  }

  close(): void {
    this.ws.close();
    this.onClosed(new GatewayCallError('The gateway connection was closed by the client.', { code: 'CLOSED' }));
  }

  private onFrame(text: string): void {
    let frame: Frame;
    try {
      frame = JSON.parse(text) as Frame;
    } catch {
      return;
    }
    if (frame?.type === 'res') {
      const p = this.pending.get(frame.id ?? '');
      if (!p) return;
      this.pending.delete(frame.id ?? '');
      clearTimeout(p.timer);
      if (frame.ok) p.resolve(frame.payload);
      else p.reject(new GatewayCallError(frame.error?.message ?? 'The gateway refused the request.', frame.error ?? {}));
    } else if (frame?.type === 'event') {
      for (const handler of [...this.handlers]) handler(frame.event ?? '', frame.payload);
    }
  }

  private onClosed(err: Error): void {
    if (this.closedWith) return;
    this.closedWith = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    for (const handler of [...this.closeHandlers]) handler(err);
    this.closeHandlers.clear();
  }
}

export function isStartupRetry(err: unknown): err is GatewayCallError {
  return err instanceof GatewayCallError && err.error.details?.reason === 'startup-sidecars';
}
