import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { ApiError, HarnesslayerClient } from '../sdk/client.js';
import { deployFolder } from '../sdk/deploy.js';

/** `harnesslayer deploy <folder> --app <slug>`: publishes a folder as the app's next version. */
export function registerDeployCommand(program: Command): void {
  program
    .command('deploy')
    .description('Upload a folder as the next version of an app (HARNESSLAYER_URL, HARNESSLAYER_API_KEY). Honours .harnesslayerignore.')
    .argument('<folder>', 'the app folder (a Claude Code project or an OpenClaw workspace), or a zip or tar.gz bundle of it')
    .requiredOption('--app <app>', 'app display id or slug')
    .option('--url <url>', 'server URL (overrides HARNESSLAYER_URL, default http://127.0.0.1:8787)')
    .action(async (folder: string, opts: { app: string; url?: string }) => {
      const apiKey = process.env.HARNESSLAYER_API_KEY;
      if (!apiKey) {
        console.error('Set HARNESSLAYER_API_KEY to an organization API key (dk-...).');
        process.exitCode = 2;
        return;
      }
      const client = new HarnesslayerClient({ baseUrl: opts.url ?? process.env.HARNESSLAYER_URL ?? 'http://127.0.0.1:8787', apiKey });
      const bar = new cliProgress.SingleBar(
        { format: '{phase} [{bar}] {value}/{total} files', hideCursor: true, noTTYOutput: false, stream: process.stderr },
        cliProgress.Presets.shades_classic,
      );
      let phase = '';
      try {
        const result = await deployFolder(client, folder, opts.app, {
          onSkip: (name) => console.error(`Left out ${name}: a symbolic link or special file (a bundle holds regular files; copy the file in if the agent needs it).`),
          onProgress: (p) => {
            if (p.phase !== phase) {
              if (phase) bar.stop();
              phase = p.phase;
              bar.start(p.total, 0, { phase: p.phase.padEnd(9) });
            }
            bar.update(p.done);
          },
        });
        if (phase) bar.stop();
        const v = result.version;
        console.log(`Deployed version ${v.number} (${v.id}): ${v.fileCount} files, ${v.size} bytes; uploaded ${result.uploaded}, already stored ${result.skipped}.`);
      } catch (err) {
        if (phase) bar.stop();
        const detail = err instanceof ApiError && err.details ? `\n${JSON.stringify(err.details, null, 2)}` : '';
        console.error(`Deploy failed: ${(err as Error).message}${detail}`);
        process.exitCode = 1;
      }
    });
}
