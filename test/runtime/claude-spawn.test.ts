/**
 * Claude Code's child process is started through `setpriv --pdeathsig KILL`, so it dies
 * with the process that started it, even one killed outright. No database.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SETPRIV, spawnTiedToParent } from '../../src/runtime/claude-spawn.js';
import { eventually } from '../helpers/server.js';

/** A process that exists and is not a zombie. */
function running(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

const spawnOptions = (command: string, args: string[]) => ({ command, args, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, signal: new AbortController().signal });

describe.runIf(process.platform === 'linux')('the Claude Code child process', () => {
  it('is started through setpriv on Linux', () => {
    expect(SETPRIV).toMatch(/\/setpriv$/);
  });

  it('passes its stderr on and keeps the tail for an error message', async () => {
    const seen: string[] = [];
    const tied = spawnTiedToParent((d) => seen.push(d));
    const child = tied.spawn!(spawnOptions('sh', ['-c', 'echo "$(head -c 3000 /dev/zero | tr "\\\\0" x)" >&2; echo "bad flag" >&2; exit 3'])) as ChildProcess;
    const [code] = await once(child, 'close'); // after exit and after stderr has been read to its end
    expect(code).toBe(3);
    expect(seen.join('')).toBe(`${'x'.repeat(3000)}\nbad flag\n`);
    expect(tied.stderr.tail()).toMatch(/^x+\nbad flag$/);
    expect(tied.stderr.tail().length).toBeLessThanOrEqual(1000);
  });

  it('dies when the process that started it is killed outright', async () => {
    // A parent that starts a long sleep the way the runtime starts Claude Code, then is SIGKILLed.
    const module = path.resolve(import.meta.dirname, '../../src/runtime/claude-spawn.ts');
    const script = `
      const { spawnTiedToParent } = await import(${JSON.stringify(module)});
      const child = spawnTiedToParent(undefined).spawn({ command: 'sleep', args: ['60'], env: { PATH: process.env.PATH }, signal: new AbortController().signal });
      console.log(child.pid);
      setInterval(() => {}, 1000);`;
    const parent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
    const pid = Number(line.toString().trim());
    expect(running(pid)).toBe(true);
    parent.kill('SIGKILL');
    await eventually(async () => !running(pid), 'the child to die with its parent', 5_000);
  });
});
