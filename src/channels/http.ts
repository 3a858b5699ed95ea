import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { Config } from '../config.js';
import { assertPublicUrl, publicLookup } from '../core/url-guard.js';

/** An attempt fails on a non-2xx answer, a connection error, or no answer within this. */
export const ATTEMPT_TIMEOUT_MS = 10_000;
/** Enough of an answer to explain a failure; the rest is drained unread. */
const MAX_ANSWER_BYTES = 16 * 1024;

export interface OutboundRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  /** Exact bytes to send; none for GET. */
  body?: string;
  /**
   * Tenant-chosen URLs (webhooks) pass the private-address guard, before the request and at
   * connect time, unless `allowPrivateUrls`. The Sendblue origin is the operator's setting.
   */
  guard: boolean;
  /**
   * Read a 2xx answer's body too (its start), for an API that reports errors in one
   * (Sendblue's `status: ERROR`). Its status line still decides: a body that breaks off or does
   * not end in time leaves the attempt ok, with what came.
   */
  readAnswer?: boolean;
}

export interface OutboundResult {
  ok: boolean;
  /** The HTTP status, or null when no answer came. */
  status: number | null;
  /** Why the attempt failed (null when ok). */
  error: string | null;
  /** The start of the answer's body (text) when it failed; a 2xx answer's only with `readAnswer`. */
  body: string;
}

/** `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; the key is the `whsec_…` string as UTF-8. */
export function signature(secret: string, body: string, now: Date): string {
  const t = Math.floor(now.getTime() / 1000);
  const v1 = createHmac('sha256', Buffer.from(secret, 'utf8')).update(`${t}.${body}`).digest('hex');
  return `t=${t},v1=${v1}`;
}

/** One HTTP attempt. Never throws: every failure is a result with `error`. */
export async function sendOnce(config: Pick<Config, 'allowPrivateUrls'>, req: OutboundRequest): Promise<OutboundResult> {
  const failed = (error: string, status: number | null = null, body = ''): OutboundResult => ({ ok: false, status, error, body });
  if (req.guard) {
    try {
      await assertPublicUrl(config, req.url);
    } catch (err) {
      return failed((err as Error).message);
    }
  }
  let url: URL;
  try {
    url = new URL(req.url);
  } catch {
    return failed(`"${req.url}" is not a valid URL.`);
  }
  const client = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : undefined;
  if (!client) return failed(`"${req.url}" is not an http or https URL.`);
  const headers: Record<string, string> = { ...req.headers };
  if (req.body !== undefined) headers['content-length'] = String(Buffer.byteLength(req.body));
  for (const [name, value] of Object.entries(headers)) {
    // Node refuses to build a request with such a header: an attempt that failed, not a crash.
    try {
      http.validateHeaderName(name);
      http.validateHeaderValue(name, value);
    } catch (err) {
      return failed(`the header "${name}" cannot be sent: ${(err as Error).message}`);
    }
  }
  return new Promise((resolve) => {
    let settled = false;
    const settle = (r: OutboundResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const request = client.request(
      url,
      {
        method: req.method,
        headers,
        // A fresh socket per attempt: the connect-time lookup checks every address it dials.
        agent: false,
        ...(req.guard && !config.allowPrivateUrls ? { lookup: publicLookup } : {}),
      },
      (res) => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let size = 0;
        const text = () => Buffer.concat(chunks).subarray(0, MAX_ANSWER_BYTES).toString('utf8');
        clearTimeout(timer);
        const delivered = status >= 200 && status < 300;
        const answered = () => (delivered ? { ok: true, status, error: null, body: text() } : failed(`answered HTTP ${status}`, status, text()));
        // The rest of the answer may take as long again; then the socket goes.
        const drain = setTimeout(() => {
          request.destroy();
          settle(answered());
        }, ATTEMPT_TIMEOUT_MS);
        res.on('close', () => clearTimeout(drain));
        if (delivered && !req.readAnswer) {
          // The status line decides: a 2xx is a delivery, however slowly (or whether) its body ends.
          settle({ ok: true, status, error: null, body: '' });
          res.resume();
          return;
        }
        // A failure's body explains it; a 2xx's, when asked for, may report an error.
        res.on('data', (c: Buffer) => {
          if (size < MAX_ANSWER_BYTES) chunks.push(c);
          size += c.length;
        });
        res.on('end', () => settle(answered()));
        res.on('error', (err) => settle(delivered ? answered() : failed(`the answer broke off: ${err.message}`, status, text())));
      },
    );
    const timer = setTimeout(() => {
      settle(failed(`no answer within ${ATTEMPT_TIMEOUT_MS / 1000} s`));
      request.destroy();
    }, ATTEMPT_TIMEOUT_MS);
    request.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EPRIVATEADDRESS' ? err.message : `${err.code ?? 'connection error'}: ${err.message}`;
      settle(failed(why));
    });
    request.end(req.body);
  });
}
