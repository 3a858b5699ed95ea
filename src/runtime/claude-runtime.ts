import fs from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { sql } from 'kysely';
import type { Credential } from '../core/apps.js';
import type { Ctx } from '../core/context.js';
import { assertPublicUrl } from '../core/url-guard.js';
import type { Db, Tx } from '../storage/db.js';
import type { App } from '../storage/schema.js';
import { exportTranscript, importTranscript, projectDirName, runClaudeTurn, type McpCredential } from './claude.js';
import { startMcpProxy } from './mcp-proxy.js';
import { TurnError, type TurnOutcome, type TurnRequest } from './turn.js';

/**
 * The `claude` runtime in the run pipeline: Claude Code's config dir in the turn's scratch dir,
 * the session's transcript restored from the database before the turn and stored after it
 * (so `resume` works on any worker, after any restart), the app's credentials as HTTP MCP
 * servers, the model endpoint and key from the server's configuration.
 */
export async function runClaude(req: TurnRequest): Promise<TurnOutcome> {
  const { ctx, instance, app } = req;
  const apiKey = ctx.config.anthropicApiKey;
  if (!apiKey) throw new TurnError('ANTHROPIC_API_KEY is not set on the server that ran this turn; claude apps cannot run without it.', 'not_configured');
  const credentials = mcpServersOf(ctx, app);
  await assertPublicMcpServers(ctx, credentials);
  // Claude Code's config dir and HOME: the turn's own, gone with it (its transcript is kept in
  // the database, and what the agent writes to ~ is not the user's files).
  const configDir = req.scratch;
  await fs.mkdir(configDir, { recursive: true, mode: 0o700 });
  const saved = instance.sessionId ? await loadTranscript(ctx.db, instance.organizationId, instance.sessionId) : null;
  // Claude Code reaches them through this process, never on its own (mcp-proxy.ts).
  const proxy = credentials.length > 0 ? await startMcpProxy(ctx.config, credentials) : null;
  try {
    if (saved) await importTranscript(configDir, req.cwd, saved.sdkSessionId, saved.jsonl);
    const result = await runClaudeTurn({
      cwd: req.cwd,
      configDir,
      prompt: req.prompt,
      images: req.images,
      resumeSessionId: saved?.sdkSessionId,
      mcpServers: proxy?.servers,
      anthropicBaseUrl: ctx.config.anthropicBaseUrl,
      anthropicApiKey: apiKey,
      model: ctx.config.claudeModel,
      abortSignal: req.abortSignal,
      timeoutMs: ctx.config.runTimeoutSeconds * 1000,
      onEvent: req.onEvent,
    });
    const sdkSessionId = result.sdkSessionId;
    const jsonl = sdkSessionId ? await exportTranscript(configDir, req.cwd, sdkSessionId) : null;
    const sessionId = instance.sessionId;
    return {
      status: result.status,
      output: result.output,
      error: result.error,
      usage: result.usage,
      persist: sdkSessionId && jsonl && sessionId ? (tx) => saveTranscript(tx, instance.organizationId, sessionId, sdkSessionId, jsonl) : undefined,
      // Claude Code records the prompt in the transcript when it takes it: a turn stopped
      // before that leaves the transcript as it was.
      inputKept: jsonl !== null && jsonl !== (saved?.jsonl ?? null),
    };
  } finally {
    await proxy?.close();
    // The transcript lives in the database; this worker's copy is only a cache.
    await fs.rm(path.join(configDir, 'projects', projectDirName(req.cwd)), { recursive: true, force: true });
  }
}

/**
 * The private-address guard again, before the turn: the URLs were checked when the app was
 * created, but a name may resolve elsewhere now. A refused server fails the turn, saying why.
 * (The proxy checks each address again when it connects, and refuses redirects.)
 */
async function assertPublicMcpServers(ctx: Pick<Ctx, 'config'>, servers: McpCredential[]): Promise<void> {
  for (const server of servers) {
    try {
      await assertPublicUrl(ctx.config, server.url);
    } catch (err) {
      throw new TurnError(
        `The app's MCP server may not be reached: ${(err as Error).message} Point the app's credential at a public URL.`,
        'mcp_server_refused',
      );
    }
  }
}

/** Each `{mcp_server_url, token}` credential as a named HTTP MCP server (names from the host). */
export function mcpServersOf(ctx: Pick<Ctx, 'secrets'>, app: App): McpCredential[] {
  const credentials = app.credentials ? ctx.secrets.decryptJson<Credential[]>(app.credentials) : [];
  const taken = new Set<string>();
  return credentials.map((c) => {
    let base = 'mcp';
    try {
      base = new URL(c.mcp_server_url).hostname.replace(/[^A-Za-z0-9]+/g, '_').replace(/^_+|_+$/g, '') || 'mcp';
    } catch {
      // A URL that does not parse: the guard refuses it before the turn starts.
    }
    let name = base;
    for (let i = 2; taken.has(name); i++) name = `${base}_${i}`;
    taken.add(name);
    return { name, url: c.mcp_server_url, token: c.token };
  });
}

async function loadTranscript(db: Db, organizationId: string, sessionId: string): Promise<{ sdkSessionId: string; jsonl: string } | null> {
  const row = await db
    .selectFrom('sessionTranscripts')
    .select(['sdkSessionId', 'transcript'])
    .where('organizationId', '=', organizationId)
    .where('sessionId', '=', sessionId)
    .executeTakeFirst();
  return row ? { sdkSessionId: row.sdkSessionId, jsonl: gunzipSync(row.transcript).toString('utf8') } : null;
}

/** Stores the transcript with the turn's final transaction, unless the session was deleted meanwhile. */
async function saveTranscript(tx: Tx, organizationId: string, sessionId: string, sdkSessionId: string, jsonl: string): Promise<void> {
  const transcript = gzipSync(Buffer.from(jsonl, 'utf8'));
  await sql`
    insert into session_transcripts (organization_id, session_id, sdk_session_id, transcript, updated_at)
    select ${organizationId}, ${sessionId}, ${sdkSessionId}, ${transcript}, now()
     where exists (select 1 from sessions where organization_id = ${organizationId} and id = ${sessionId})
    on conflict (organization_id, session_id)
    do update set sdk_session_id = excluded.sdk_session_id, transcript = excluded.transcript, updated_at = excluded.updated_at`.execute(tx);
}
