import { randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config.js';
import { publicLookup } from '../core/url-guard.js';
import type { McpCredential } from './claude.js';

/**
 * A loopback proxy between Claude Code and an app's MCP servers, one per turn. Claude Code's
 * own HTTP client resolves names itself and follows redirects, so the private-address guard
 * checked in this process could be stepped around: a public URL answering 307 to 127.0.0.1
 * led the turn into a loopback service (CONTRACT §9). Through the proxy, every connection to
 * an MCP server is made here: its addresses checked at connect time (`publicLookup`), a
 * redirect refused (502), and the bearer token added here, so it never reaches Claude Code's
 * configuration or the agent.
 */
export interface McpProxy {
  /** The servers as Claude Code sees them: a loopback URL each, no token. */
  servers: { name: string; url: string }[];
  close(): Promise<void>;
}

/**
 * Headers not passed through: the hop-by-hop ones (they describe one connection), `host` (set
 * for the target) and `authorization` (the proxy sets the token).
 */
const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'authorization']);

function forwarded(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !NOT_FORWARDED.has(name.toLowerCase())));
}

export async function startMcpProxy(config: Pick<Config, 'allowPrivateUrls'>, credentials: McpCredential[]): Promise<McpProxy> {
  // An unguessable path per server: another local process cannot borrow the token.
  const routes = credentials.map((c) => ({ ...c, prefix: `/${randomBytes(16).toString('hex')}` }));
  const server = http.createServer((req, res) => {
    const fail = (status: number, message: string) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: message }));
    };
    const path = req.url ?? '/';
    const route = routes.find((r) => path === r.prefix || path.startsWith(`${r.prefix}?`) || path.startsWith(`${r.prefix}/`));
    if (!route) return fail(404, 'no such MCP server');
    const target = new URL(route.url);
    const rest = path.slice(route.prefix.length);
    if (rest.startsWith('/')) target.pathname = `${target.pathname.replace(/\/$/, '')}${rest.split('?')[0]}`;
    const query = rest.indexOf('?');
    if (query >= 0) target.search = rest.slice(query);
    const client = target.protocol === 'https:' ? https : target.protocol === 'http:' ? http : null;
    if (!client) return fail(502, `the MCP server URL ${route.url} is not http or https`);
    const upstream = client.request(
      target,
      {
        method: req.method,
        headers: { ...forwarded(req.headers), authorization: `Bearer ${route.token}` },
        agent: false,
        ...(config.allowPrivateUrls ? {} : { lookup: publicLookup }),
      },
      (answer) => {
        const status = answer.statusCode ?? 502;
        if (status >= 300 && status < 400) {
          answer.resume();
          return fail(502, `the MCP server answered a redirect (HTTP ${status}); redirects are not followed`);
        }
        res.writeHead(status, forwarded(answer.headers));
        answer.pipe(res);
        answer.on('error', () => res.destroy());
      },
    );
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (res.headersSent) res.destroy(); // broke off mid-answer: so does the answer
      else fail(502, `the MCP server could not be reached: ${err.message}`);
    });
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    servers: routes.map((r) => ({ name: r.name, url: `http://127.0.0.1:${port}${r.prefix}` })),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
