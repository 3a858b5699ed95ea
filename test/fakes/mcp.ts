/**
 * A minimal MCP server over Streamable HTTP on loopback: JSON-RPC `initialize`,
 * `tools/list` and `tools/call` answered as plain JSON (the transport allows that), 202 for
 * notifications, 405 for the optional GET event stream. It records every request's
 * headers so tests can assert the bearer token, and rejects a wrong token with 401.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';

export interface McpRecorded {
  method: string;
  rpcMethod: string | null;
  headers: http.IncomingHttpHeaders;
  body: any;
}

export interface FakeMcpTool {
  name: string;
  description: string;
  /** Produces the tool's text output; may wait (a long-running tool for stop tests). */
  run(args: Record<string, unknown>): Promise<string> | string;
}

export class FakeMcp {
  url = '';
  readonly requests: McpRecorded[] = [];
  readonly calls: { name: string; args: Record<string, unknown> }[] = [];
  private readonly server: http.Server;

  constructor(
    readonly token: string,
    readonly tools: FakeMcpTool[] = [{ name: 'echo', description: 'Echoes its text.', run: (a) => String(a.text ?? '') }],
  ) {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => void this.handle(req, res, Buffer.concat(chunks).toString('utf8')));
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/mcp`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse, raw: string): Promise<void> {
    let body: any = null;
    try {
      body = raw ? JSON.parse(raw) : null;
    } catch {
      body = null;
    }
    this.requests.push({ method: req.method ?? 'GET', rpcMethod: body?.method ?? null, headers: req.headers, body });
    const json = (status: number, obj: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(obj));
    };
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      return json(401, { jsonrpc: '2.0', id: body?.id ?? null, error: { code: -32001, message: 'unauthorized' } });
    }
    if (req.method === 'DELETE') return void res.writeHead(200).end();
    if (req.method !== 'POST') return void res.writeHead(405, { allow: 'POST, DELETE' }).end();
    if (!body || typeof body.method !== 'string') {
      return json(400, { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'invalid request' } });
    }
    if (body.id === undefined) return void res.writeHead(202).end(); // a notification
    const ok = (result: unknown, headers?: Record<string, string>) => json(200, { jsonrpc: '2.0', id: body.id, result }, headers);
    switch (body.method) {
      case 'initialize':
        return ok(
          {
            protocolVersion: body.params?.protocolVersion ?? '2025-06-18',
            capabilities: { tools: { listChanged: false } },
            serverInfo: { name: 'fake-mcp', version: '1.0.0' },
          },
          { 'mcp-session-id': randomUUID() },
        );
      case 'ping':
        return ok({});
      case 'tools/list':
        return ok({
          tools: this.tools.map((t) => ({
            name: t.name,
            description: t.description,
            inputSchema: { type: 'object', properties: { text: { type: 'string' } } },
          })),
        });
      case 'tools/call': {
        const tool = this.tools.find((t) => t.name === body.params?.name);
        if (!tool) return json(200, { jsonrpc: '2.0', id: body.id, error: { code: -32602, message: 'unknown tool' } });
        const args = body.params?.arguments ?? {};
        this.calls.push({ name: tool.name, args });
        const text = await tool.run(args);
        if (res.destroyed) return;
        return ok({ content: [{ type: 'text', text }], isError: false });
      }
      default:
        return json(200, { jsonrpc: '2.0', id: body.id, error: { code: -32601, message: `no method ${body.method}` } });
    }
  }
}

export async function startFakeMcp(token: string, tools?: FakeMcpTool[]): Promise<FakeMcp> {
  return new FakeMcp(token, tools).start();
}
