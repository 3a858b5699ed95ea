/**
 * Claude Code's transcripts: a session is CLAUDE_CONFIG_DIR/projects/<dir>/<id>.jsonl, the
 * whole conversation state. Work and config dirs are disposable, so the caller exports the
 * transcript after a turn, stores it, and imports it into a fresh config dir before resuming.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { ZERO_USAGE, type Usage } from './events.js';

/**
 * Claude Code's project folder name for a cwd: every non-alphanumeric character becomes '-',
 * long names are cut and suffixed with a hash (Claude Code's own hash may differ; it finds
 * the file by id anyway).
 */
export function projectDirName(cwd: string): string {
  const name = path.resolve(cwd).replace(/[^a-zA-Z0-9]/g, '-');
  if (name.length <= 200) return name;
  let hash = 0;
  for (let i = 0; i < cwd.length; i++) hash = (hash * 31 + cwd.charCodeAt(i)) | 0;
  return `${name.slice(0, 200)}-${Math.abs(hash).toString(36)}`;
}

function checkSessionId(sessionId: string): void {
  if (!/^[A-Za-z0-9-]{1,128}$/.test(sessionId)) throw new Error(`Invalid Claude session id "${sessionId}".`);
}

/**
 * The session's transcript (JSONL text), or null when this config dir has none. Claude Code
 * resumes a session from whichever project folder holds it, and keeps writing there, so the
 * file is looked up by id in every folder, the cwd's first.
 */
export async function exportTranscript(configDir: string, cwd: string, sessionId: string): Promise<string | null> {
  checkSessionId(sessionId);
  const projects = path.join(configDir, 'projects');
  const dirs = [projectDirName(cwd), ...(await fs.readdir(projects).catch(() => [] as string[]))];
  for (const dir of dirs) {
    const text = await fs.readFile(path.join(projects, dir, `${sessionId}.jsonl`), 'utf8').catch(() => null);
    if (text !== null) return text;
  }
  return null;
}

/** Restores an exported transcript into a (fresh) config dir, ready for `resumeSessionId`. */
export async function importTranscript(configDir: string, cwd: string, sessionId: string, jsonl: string): Promise<void> {
  checkSessionId(sessionId);
  const dir = path.join(configDir, 'projects', projectDirName(cwd));
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, `${sessionId}.jsonl`), jsonl, { mode: 0o600 });
}

/** Claude Code's totals (cost, modelUsage) run over the whole session, resumes included. */
export function totalsOf(totalCostUsd: number, modelUsage: Record<string, Record<string, number>>): Usage {
  const usage: Usage = { inputTokens: 0, outputTokens: 0, costUsd: totalCostUsd };
  for (const m of Object.values(modelUsage ?? {})) {
    usage.inputTokens += (m.inputTokens ?? 0) + (m.cacheReadInputTokens ?? 0) + (m.cacheCreationInputTokens ?? 0);
    usage.outputTokens += m.outputTokens ?? 0;
  }
  return usage;
}

/** The session totals the transcript saved last (its `cost-state` line), before a resume. */
export async function savedUsage(configDir: string, cwd: string, sessionId: string): Promise<Usage> {
  const jsonl = await exportTranscript(configDir, cwd, sessionId);
  let usage: Usage = { ...ZERO_USAGE };
  for (const line of jsonl?.split('\n') ?? []) {
    if (!line.includes('"cost-state"')) continue;
    try {
      const entry = JSON.parse(line);
      if (entry.type === 'cost-state') usage = totalsOf(entry.totalCostUSD ?? 0, entry.modelUsage ?? {});
    } catch {
      // A torn last line of a killed process: keep the previous totals.
    }
  }
  return usage;
}
