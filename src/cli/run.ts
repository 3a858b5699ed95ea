import type { Command } from 'commander';
import { HarnesslayerClient } from '../sdk/client.js';
import { ResponseStream, type RunStarted } from '../sdk/harnesslayer.js';

/**
 * `harnesslayer run --app A --channel C --user U [--session S] "message"`: runs an app for a
 * user on a running server (HARNESSLAYER_URL, HARNESSLAYER_API_KEY = an organization key)
 * and streams the reply to the terminal as it arrives. Ctrl-C stops the instance; a second
 * Ctrl-C leaves without waiting.
 */
export function registerRunCommand(program: Command): void {
  program
    .command('run')
    .description('Run an app for a user on a running server and stream the reply (HARNESSLAYER_URL, HARNESSLAYER_API_KEY).')
    .requiredOption('--app <app>', 'app display id or slug')
    .requiredOption('--channel <channel>', 'channel display id or slug')
    .requiredOption('--user <user>', 'the end user: the profile identifier')
    .option('--session <session>', 'continue this session (default: a new one, printed on stderr)')
    .option('--url <url>', 'server URL (overrides HARNESSLAYER_URL, default http://127.0.0.1:8787)')
    .argument('<message...>', 'what to say')
    .action(async (words: string[], opts: { app: string; channel: string; user: string; session?: string; url?: string }) => {
      process.exitCode = await runCommand({
        url: (opts.url ?? process.env.HARNESSLAYER_URL ?? 'http://127.0.0.1:8787').replace(/\/+$/, ''),
        key: process.env.HARNESSLAYER_API_KEY,
        body: { appId: opts.app, channelId: opts.channel, userId: opts.user, input: words.join(' '), ...(opts.session ? { sessionId: opts.session } : {}) },
      });
    });
}

const EXIT = { completed: 0, failed: 1, stopped: 130 } as Record<string, number>;

async function runCommand(opts: { url: string; key: string | undefined; body: Record<string, unknown> }): Promise<number> {
  if (!opts.key) {
    console.error('Set HARNESSLAYER_API_KEY to an organization API key (dk-...).');
    return 2;
  }
  const http = new HarnesslayerClient({ baseUrl: opts.url, apiKey: opts.key });
  const stream = new ResponseStream(http, http.post<RunStarted>('/v1/response/run', opts.body));
  let started: RunStarted;
  try {
    started = await stream.started;
  } catch (err) {
    console.error(`Run refused: ${(err as Error).message}`);
    return 1;
  }
  console.error(`session ${started.sessionId} · instance ${started.instanceId}`);

  let stopping = false;
  const onSigint = () => {
    if (stopping) process.exit(130);
    stopping = true;
    console.error('\nStopping... (Ctrl-C again to leave at once)');
    stream.stop().catch((err: Error) => console.error(`Could not stop it: ${err.message}`));
  };
  process.on('SIGINT', onSigint);
  try {
    for await (const event of stream) {
      const status = show(event);
      if (status) return EXIT[status] ?? 1;
    }
    return 1;
  } catch (err) {
    console.error(`\nCannot read the reply: ${(err as Error).message}`);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** Writes one event to the terminal; returns the final status on the result event. */
function show(event: { type: string; data: Record<string, unknown> }): string | undefined {
  const d = event.data;
  switch (event.type) {
    case 'text.delta':
      process.stdout.write(String(d.text));
      return undefined;
    case 'tool.call':
      process.stderr.write(`\n[tool ${String(d.name)}]\n`);
      return undefined;
    case 'error':
      process.stderr.write(`\n[error] ${String(d.message)}\n`);
      return undefined;
    case 'result':
      process.stdout.write('\n');
      if (d.status !== 'completed') process.stderr.write(`[${String(d.status)}]${d.error ? ` ${String(d.error)}` : ''}\n`);
      return String(d.status);
    default:
      return undefined;
  }
}
