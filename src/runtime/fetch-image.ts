import http from 'node:http';
import https from 'node:https';
import type { Config } from '../config.js';
import { MAX_IMAGE_BYTES, sniffImage } from '../core/responses.js';
import { assertPublicUrl, publicLookup } from '../core/url-guard.js';
import type { TurnImage } from './claude.js';

/**
 * A `{url}` image of a run, fetched by the worker and passed to the model as base64, so it
 * works with any model endpoint (and offline tests). The private-address guard applies to
 * the URL and to every address a socket connects to; at most 3 redirects, 5 MiB, and 15 s
 * for all of it (a server that trickles its bytes cannot hold the turn). `stop` (the turn's
 * stop) ends it at once.
 */
export async function fetchImage(config: Pick<Config, 'allowPrivateUrls'>, url: string, stop?: AbortSignal): Promise<TurnImage> {
  const deadline = AbortSignal.timeout(FETCH_MS);
  const signal = stop ? AbortSignal.any([stop, deadline]) : deadline;
  let current = url;
  for (let redirects = 0; ; redirects++) {
    await assertPublicUrl(config, current);
    const res = await get(config, current, signal).catch((err: Error) => {
      if (stop?.aborted) throw new Error(`Image ${url}: the turn was stopped.`);
      if (deadline.aborted) throw new Error(`Image ${url}: not fetched within ${FETCH_MS / 1000} s.`);
      throw err;
    });
    if (res.status >= 300 && res.status < 400 && res.location) {
      if (redirects >= 3) throw new Error(`Image ${url}: too many redirects.`);
      current = new URL(res.location, current).toString();
      continue;
    }
    if (res.status !== 200) throw new Error(`Image ${url}: the server answered ${res.status}.`);
    const mediaType = sniffImage(res.body.subarray(0, 16));
    if (!mediaType) throw new Error(`Image ${url}: not a PNG, JPEG, GIF or WebP image.`);
    return { mediaType, data: res.body.toString('base64') };
  }
}

const FETCH_MS = 15_000;

function get(config: Pick<Config, 'allowPrivateUrls'>, url: string, signal: AbortSignal): Promise<{ status: number; location?: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const client = url.startsWith('https:') ? https : http;
    const req = client.get(url, { signal, ...(config.allowPrivateUrls ? {} : { lookup: publicLookup }) }, (res) => {
      const status = res.statusCode ?? 0;
      if (status !== 200) {
        res.resume();
        return resolve({ status, location: res.headers.location, body: Buffer.alloc(0) });
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_IMAGE_BYTES) req.destroy(new Error(`Image ${url}: larger than ${MAX_IMAGE_BYTES} bytes.`));
        else chunks.push(c);
      });
      res.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
      res.on('error', reject);
      res.on('close', () => {
        if (!res.complete) reject(new Error(`Image ${url}: the answer broke off.`));
      });
    });
    req.on('error', reject);
  });
}
