import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import type { SpawnedProcess, SpawnOptions } from '@anthropic-ai/claude-agent-sdk';

/**
 * Claude Code dies with the process that started it. The SDK kills its child when our
 * process exits normally, but a worker killed with SIGKILL (the OOM killer, a container
 * stop that timed out) would leave the turn running on, still calling the model. So on Linux
 * the child is started through util-linux's `setpriv --pdeathsig KILL`, which asks the kernel
 * to kill it when its parent dies, then execs Claude Code in place (same pid). Where
 * `setpriv` is missing (macOS, a minimal image) the SDK spawns as usual.
 */

/** `setpriv` on PATH, on Linux; null elsewhere. Looked up once. */
export const SETPRIV: string | null = process.platform === 'linux' ? onPath('setpriv') : null;

function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(path.delimiter)) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

/** How much of Claude Code's last stderr an error message quotes. */
const STDERR_TAIL = 1000;

export interface ChildStderr {
  /** The last STDERR_TAIL characters written, for a crash's error message. */
  tail(): string;
}

/**
 * The SDK's `spawnClaudeCodeProcess` option, or undefined where setpriv is missing. A custom
 * spawn takes over stderr from the SDK: it is read here (a full pipe would stall the child),
 * passed to `onStderr`, and its tail kept.
 */
export function spawnTiedToParent(onStderr: ((data: string) => void) | undefined): { spawn?: (o: SpawnOptions) => SpawnedProcess; stderr: ChildStderr } {
  let tail = '';
  const stderr: ChildStderr = { tail: () => tail.trim() };
  if (!SETPRIV) return { stderr };
  const setpriv = SETPRIV;
  return {
    stderr,
    spawn: (o) => {
      // The SDK's signal aborts only after its own stdin-EOF grace period, so it may go to spawn().
      const child = spawn(setpriv, ['--pdeathsig', 'KILL', '--', o.command, ...o.args], { cwd: o.cwd, env: o.env, signal: o.signal, stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true });
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (data: string) => {
        tail = (tail + data).slice(-STDERR_TAIL);
        onStderr?.(data);
      });
      return child;
    },
  };
}
