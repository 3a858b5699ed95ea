/**
 * A fake Sendblue API on loopback (point `SENDBLUE_API_BASE_URL` at `url`). It serves
 * Sendblue's documented paths with their auth headers (`sb-api-key-id`,
 * `sb-api-secret-key`: 401 when wrong), answers like Sendblue (`status: "QUEUED"` and a
 * `message_handle`), records every request, and can fail the next N calls of a path.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export const SENDBLUE_PATHS = ['/api/send-message', '/api/send-group-message', '/api/send-typing-indicator'] as const;
export type SendbluePath = (typeof SENDBLUE_PATHS)[number];

export interface SendblueRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: any;
  /** Date.now() when it arrived. */
  at: number;
  /** The status this fake answered. */
  status: number;
}

export class FakeSendblue {
  url = '';
  readonly requests: SendblueRequest[] = [];
  private readonly failures = new Map<string, { remaining: number; status: number; number?: string; code: number }>();
  private readonly server: http.Server;

  constructor(
    readonly apiKeyId = 'sb-key-id-0123456789',
    readonly apiSecretKey = 'sb-secret-key-0123456789',
  ) {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => this.handle(req, res, Buffer.concat(chunks).toString('utf8')));
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

  /**
   * The next `times` calls of `path` answer `status` (default 500); only calls to `number`
   * when given, so replies of other conversations still arriving are not counted.
   */
  fail(path: SendbluePath, times: number, status = 500, number?: string, code = 5000): void {
    this.failures.set(path, { remaining: times, status, number, code });
  }

  /** Successful calls of `path` (to `number` when given), in arrival order. */
  sent(path: SendbluePath, number?: string): SendblueRequest[] {
    return this.requests.filter((r) => r.path === path && r.status === 200 && (number === undefined || r.body.number === number));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse, raw: string): void {
    const path = (req.url ?? '/').split('?')[0];
    let body: any = null;
    try {
      body = JSON.parse(raw);
    } catch {
      body = { raw };
    }
    const answer = (status: number, obj: unknown) => {
      this.requests.push({ method: req.method ?? '', path, headers: req.headers, body, at: Date.now(), status });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    if (req.method !== 'POST' || !(SENDBLUE_PATHS as readonly string[]).includes(path)) return answer(404, { status: 'ERROR', error_message: `no route ${req.method} ${path}` });
    if (req.headers['sb-api-key-id'] !== this.apiKeyId || req.headers['sb-api-secret-key'] !== this.apiSecretKey) {
      return answer(401, { status: 'ERROR', error_message: 'Unauthorized: invalid API credentials' });
    }
    if (!String(req.headers['content-type'] ?? '').startsWith('application/json')) return answer(400, { status: 'ERROR', error_code: 4000, error_message: 'expected JSON' });
    const failure = this.failures.get(path);
    if (failure && failure.remaining > 0 && (failure.number === undefined || failure.number === body?.number)) {
      failure.remaining--;
      return answer(failure.status, { status: 'ERROR', error_code: failure.code, error_message: failure.code === 5000 ? 'Internal Error' : `Error ${failure.code}` });
    }
    if (path === '/api/send-typing-indicator') return answer(200, { number: body.number, status: 'SENT', error_message: null });
    return answer(200, {
      accountEmail: 'fake@example.com',
      content: body.content,
      is_outbound: true,
      status: 'QUEUED',
      error_code: null,
      error_message: null,
      message_handle: randomUUID(),
      date_sent: new Date().toISOString(),
      from_number: body.from_number,
      number: body.number ?? null,
      group_id: body.group_id ?? '',
    });
  }
}

export async function startFakeSendblue(): Promise<FakeSendblue> {
  return new FakeSendblue().start();
}
