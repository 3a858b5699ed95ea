import type { Config } from '../config.js';
import type { IMessageData } from '../core/channels.js';
import { sendOnce, type OutboundResult } from './http.js';

/**
 * The few calls of Sendblue's HTTP API a channel makes, at `SENDBLUE_API_BASE_URL` plus
 * Sendblue's documented paths. From Sendblue's docs (docs.sendblue.com, "Sending Messages",
 * "Typing Indicators", "Group Messages"; the same pages in sendblue-api/sendblue-api.github.io
 * docs/outbound.md):
 * - every call is a JSON POST authenticated by the headers `sb-api-key-id` and
 *   `sb-api-secret-key`;
 * - `POST /api/send-message {number, from_number, content}`; the answer carries `status`
 *   (`QUEUED`, … or `ERROR` with `error_code`/`error_message`);
 * - `POST /api/send-group-message {group_id, from_number, content}`;
 * - `POST /api/send-typing-indicator {number, from_number}` (best effort, not for groups);
 * - "Messages sent using Sendblue must be less than 18996 characters in length. If you have
 *   larger requirements we recommend breaking the message up into several, smaller messages."
 */

export const SENDBLUE_MAX_CONTENT = 18_995;

export type SendbluePath = '/api/send-message' | '/api/send-group-message' | '/api/send-typing-indicator';

export interface SendblueResult extends OutboundResult {
  /** Retrying cannot help (rejected credentials or request). */
  permanent: boolean;
}

// 4xx answers a retry cannot change; anything else (5xx, 408, 429, no answer) may pass later.
const PERMANENT_STATUS = new Set([400, 401, 403, 404, 405, 410, 413, 422]);
// Sendblue's own error codes for a request that is wrong, not a service that is down.
const PERMANENT_CODES = new Set([4000, 4002]);

export async function sendblue(config: Pick<Config, 'sendblueApiBaseUrl' | 'allowPrivateUrls'>, data: IMessageData, path: SendbluePath, payload: object): Promise<SendblueResult> {
  const res = await sendOnce(config, {
    method: 'POST',
    url: `${config.sendblueApiBaseUrl}${path}`,
    headers: { 'content-type': 'application/json', 'sb-api-key-id': data.sendBlueAPIKey, 'sb-api-secret-key': data.sendBlueSecretKey },
    body: JSON.stringify(payload),
    guard: false,
    readAnswer: true,
  });
  if (!res.ok) return { ...res, error: `Sendblue ${path} ${res.error}${res.body ? `: ${res.body.slice(0, 300)}` : ''}`, permanent: res.status !== null && PERMANENT_STATUS.has(res.status) };
  // A 2xx may still report a message Sendblue could not take.
  let answer: { status?: unknown; error_code?: unknown; error_message?: unknown } = {};
  try {
    answer = JSON.parse(res.body) as typeof answer;
  } catch {
    // Not JSON: the 2xx is all there is to go by.
  }
  if (String(answer.status).toUpperCase() !== 'ERROR') return { ...res, permanent: false };
  const code = Number(answer.error_code);
  return { ...res, ok: false, error: `Sendblue ${path} reported an error (${answer.error_code ?? 'no code'}): ${String(answer.error_message ?? '')}`, permanent: PERMANENT_CODES.has(code) };
}

/**
 * Splits a reply into messages under Sendblue's limit, at a paragraph, line or word break
 * when one is near the end, never inside a surrogate pair. Counting UTF-16 units counts no
 * fewer characters than Sendblue can.
 */
export function splitContent(text: string, limit = SENDBLUE_MAX_CONTENT): string[] {
  const parts: string[] = [];
  let rest = text;
  while (rest.length > limit) {
    let cut = -1;
    for (const sep of ['\n\n', '\n', ' ']) {
      const at = rest.lastIndexOf(sep, limit - sep.length);
      if (at >= limit / 2) {
        cut = at + sep.length;
        break;
      }
    }
    if (cut < 0) {
      cut = limit;
      const code = rest.charCodeAt(cut - 1);
      if (code >= 0xd800 && code <= 0xdbff) cut--; // a high surrogate stays with its pair
    }
    const part = rest.slice(0, cut).trimEnd();
    if (part) parts.push(part);
    rest = rest.slice(cut).trimStart();
  }
  if (rest) parts.push(rest);
  return parts;
}
