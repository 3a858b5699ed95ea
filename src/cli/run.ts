import type { Command } from 'commander';

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
  const headers = { authorization: `Bearer ${opts.key}` };
  const started = await post(opts.url, '/v1/response/run', headers, opts.body);
  if (!started.ok) {
    console.error(`Run refused: ${started.error}`);
    return 1;
  }
  const { instanceId, sessionId } = started.data as { instanceId: string; sessionId: string };
  console.error(`session ${sessionId} · instance ${instanceId}`);

  let stopping = false;
  const onSigint = () => {
    if (stopping) process.exit(130);
    stopping = true;
    console.error('\nStopping... (Ctrl-C again to leave at once)');
    void post(opts.url, '/v1/response/stop', headers, { instanceId });
  };
  process.on('SIGINT', onSigint);
  try {
    return await follow(opts.url, instanceId, headers);
  } finally {
    process.off('SIGINT', onSigint);
  }
}

async function post(base: string, path: string, headers: Record<string, string>, body: unknown): Promise<{ ok: boolean; data?: unknown; error?: string }> {
  try {
    const res = await fetch(`${base}${path}`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const json = (await res.json()) as { success: boolean; data?: unknown; error?: string };
    return { ok: json.success, data: json.data, error: json.error ?? `HTTP ${res.status}` };
  } catch (err) {
    return { ok: false, error: `cannot reach ${base}: ${(err as Error).message}. Is the server running (harnesslayer serve)?` };
  }
}

/** Reads the SSE stream to the done event, resuming with Last-Event-ID if the connection drops. */
async function follow(base: string, instanceId: string, headers: Record<string, string>): Promise<number> {
  let lastId = 0;
  for (let attempt = 0; attempt < 5; attempt++) {
    let res: Response;
    try {
      res = await fetch(`${base}/v1/response/stream/${instanceId}`, { headers: { ...headers, accept: 'text/event-stream', 'last-event-id': String(lastId) } });
    } catch (err) {
      console.error(`\nConnection lost (${(err as Error).message}); retrying...`);
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    if (!res.ok || !res.body) {
      console.error(`Cannot read the reply: HTTP ${res.status} ${await res.text()}`);
      return 1;
    }
    let buffer = '';
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const id = /^id: (\d+)$/m.exec(frame)?.[1];
          const data = /^data: (.*)$/m.exec(frame)?.[1];
          if (!id || !data) continue; // a heartbeat
          lastId = Number(id);
          const status = show(JSON.parse(data) as { type: string; data: Record<string, unknown> });
          if (status) return EXIT[status] ?? 1;
        }
      }
    } catch (err) {
      console.error(`\nConnection lost (${(err as Error).message}); resuming...`);
    }
  }
  console.error('Gave up reading the reply.');
  return 1;
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
