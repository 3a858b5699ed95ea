import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { cloneTemplate, type TestDatabase } from './helpers/databases.js';

const BIN = path.resolve('bin/harnesslayer.mjs');
let db: TestDatabase;

beforeAll(async () => {
  db = await cloneTemplate();
});
afterAll(async () => db?.drop());

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    HARNESSLAYER_DATA_DIR: db.dataDir,
    ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
    ...extra,
  };
}

async function run(args: string[], extra: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: env(extra) });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const [code] = await once(child, 'exit');
  return { code, stdout, stderr };
}

async function freePort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  srv.close();
  return port;
}

describe('harnesslayer CLI', () => {
  it('--help on every command', async () => {
    for (const args of [['--help'], ['serve', '--help'], ['user', '--help'], ['user', 'create', '--help']]) {
      const res = await run(args);
      expect(res.code, args.join(' ')).toBe(0);
      expect(res.stdout).toContain('Usage: harnesslayer');
    }
    const top = await run(['--help']);
    expect(top.stdout).toMatch(/serve/);
    expect(top.stdout).toMatch(/user/);
    // Both commands that open the data dir take it as a flag.
    for (const args of [['serve', '--help'], ['user', 'create', '--help']]) expect((await run(args)).stdout, args.join(' ')).toContain('--data-dir <dir>');
  });

  it('user create prints a working user key', async () => {
    const res = await run(['user', 'create', '--email', 'ops@example.com']);
    expect(res.code, res.stderr).toBe(0);
    const key = /dk-[A-Za-z0-9]{40}/.exec(res.stdout)?.[0];
    expect(key).toBeDefined();

    // serve: answers /healthz, accepts that key, and ensures HARNESSLAYER_USER_KEY.
    const port = await freePort();
    const bootstrap = 'dk-BootstrapKey00000000000000000000000000';
    const child = spawn(process.execPath, [BIN, 'serve'], { env: env({ PORT: String(port), HARNESSLAYER_USER_KEY: bootstrap }) });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    try {
      await new Promise<void>((resolve, reject) => {
        const check = () => (out.includes('listening on') ? resolve() : undefined);
        child.stdout.on('data', check);
        child.once('exit', (code) => reject(new Error(`serve exited ${code}: ${out}`)));
      });
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ success: true, data: { status: 'ok' } });
      for (const k of [key!, bootstrap]) {
        const res = await fetch(`http://127.0.0.1:${port}/v1/organization/create`, {
          method: 'POST',
          headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: 'CLI', slug: `cli-${k.slice(3, 9).toLowerCase()}` }),
        });
        expect(res.status).toBe(200);
      }
      // Users already exist, so no owner key is printed.
      expect(out).not.toContain('First start');
      if (!db.databaseUrl) {
        // The embedded database serves one process: a second one is refused, not let write.
        for (const args of [['user', 'create'], ['serve', '--port', String(await freePort())]]) {
          const second = await run(args);
          expect(second.code, args.join(' ')).toBe(1);
          expect(second.stderr).toContain(`is in use by process ${child.pid}`);
          expect(second.stderr).toContain('Stop that process first');
        }
      }
    } finally {
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
    }
  });

  it('npm start passes a stop signal on to the server, which stops gracefully instead of living on', async () => {
    // What a process manager does when `npm start` is its command: SIGTERM to npm.
    const port = await freePort();
    const npm = spawn('npm', ['start', '--silent'], { env: env({ PORT: String(port) }), cwd: path.resolve('.') });
    let out = '';
    npm.stdout.on('data', (d) => (out += d));
    npm.stderr.on('data', (d) => (out += d));
    let serverPid: number | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        npm.stdout.on('data', () => (out.includes('listening on') ? resolve() : undefined));
        npm.once('exit', (code) => reject(new Error(`npm start exited ${code}: ${out}`)));
      });
      // The server's pid, from its request log.
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      await expect.poll(() => /"pid":(\d+)/.exec(out)?.[1]).toBeDefined();
      serverPid = Number(/"pid":(\d+)/.exec(out)![1]);
      npm.kill('SIGTERM');
      await once(npm, 'exit');
      // The server itself got the signal (its graceful stop says so) and is gone with npm.
      expect(out).toContain('SIGTERM: stopping');
      expect(() => process.kill(serverPid!, 0)).toThrow();
      serverPid = undefined;
    } finally {
      if (npm.exitCode === null) npm.kill('SIGKILL');
      if (serverPid) process.kill(serverPid, 'SIGKILL');
    }
  });

  it('PORT=0 takes any free port, and names it in its log line and in the URLs it signs', async () => {
    const child = spawn(process.execPath, [BIN, 'serve'], { env: env({ PORT: '0', HARNESSLAYER_USER_KEY: 'dk-AnyPortKey0000000000000000000000000000' }) });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', () => (out.includes('all: listening on') ? resolve() : undefined));
        child.once('exit', (code) => reject(new Error(`serve exited ${code}: ${out}`)));
      });
      const base = /all: listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(out);
      expect(base, out).not.toBeNull();
      expect(Number(base![2])).toBeGreaterThan(0);
      const post = async (p: string, key: string, body: unknown) =>
        (await (await fetch(`${base![1]}${p}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })).json()) as { data: any };
      const org = await post('/v1/organization/create', 'dk-AnyPortKey0000000000000000000000000000', { name: 'Any port', slug: `any-port-${Date.now()}` });
      await post('/v1/app/create', org.data.apiKey, { slug: 'a', type: 'claude' });
      const upload = await post('/v1/version/upload', org.data.apiKey, { appId: 'a', files: [{ name: 'CLAUDE.md', hash: `sha256-${'0'.repeat(64)}` }] });
      expect(upload.data.uploadUrls[0].url.startsWith(`${base![1]}/v1/blobs/upload/`)).toBe(true);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });

  it('brackets an IPv6 HOST in the default public URL, so signed URLs parse', () => {
    const config = loadConfig({ HOST: '::1', PORT: '8787' });
    expect(config.publicUrl).toBe('http://[::1]:8787');
    expect(new URL(`${config.publicUrl}/v1/download/x`).port).toBe('8787');
    expect(loadConfig({ HOST: '0.0.0.0', PORT: '9000' }).publicUrl).toBe('http://0.0.0.0:9000');
    expect(loadConfig({ HOST: '::1', HARNESSLAYER_PUBLIC_URL: 'https://agents.example.com/' }).publicUrl).toBe('https://agents.example.com');
  });

  it('a first start on a port in use says what to do, and the owner key comes with the start that listens', async () => {
    const fresh = await cloneTemplate(); // no user yet: a first start
    const where = { HARNESSLAYER_DATA_DIR: fresh.dataDir, ...(fresh.databaseUrl ? { DATABASE_URL: fresh.databaseUrl } : {}), HOST: '127.0.0.1' };
    const busy = net.createServer().listen(0, '127.0.0.1');
    await once(busy, 'listening');
    const taken = (busy.address() as net.AddressInfo).port;
    try {
      const res = await run(['serve', '--port', String(taken)], where);
      expect(res.code).toBe(1);
      expect(res.stderr).toContain(`127.0.0.1:${taken} is already in use`);
      expect(res.stderr).toContain('set PORT, or --port, to a free port');
      expect(res.stdout).not.toContain('First start');
    } finally {
      busy.close();
    }
    const child = spawn(process.execPath, [BIN, 'serve', '--port', String(await freePort())], { env: env(where) });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', () => (out.includes('listening on') ? resolve() : undefined));
        child.once('exit', (code) => reject(new Error(`serve exited ${code}: ${out}`)));
      });
      expect(out).toMatch(/First start: created the owner[\s\S]*dk-[A-Za-z0-9]{40}/);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
      await fresh.drop();
    }
  });

  it('says a database it cannot reach is one, not a failed migration', async () => {
    const res = await run(['serve'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/test' });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('cannot use the database');
    expect(res.stderr).toContain('ECONNREFUSED');
    expect(res.stderr).not.toContain('migration');
  });

  it('refuses an unknown LOG_LEVEL at start, naming the levels', async () => {
    const res = await run(['serve'], { LOG_LEVEL: 'verbose' });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got "verbose")');
  });

  it('refuses a split role on the embedded database with a message that says what to do', async () => {
    if (db.databaseUrl) {
      // On PostgreSQL the split roles are allowed: check that a bad role is refused instead.
      const res = await run(['serve', '--role', 'nope']);
      expect(res.code).not.toBe(0);
      expect(res.stderr).toMatch(/all, api, worker/);
      return;
    }
    const res = await run(['serve', '--role', 'worker']);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('needs DATABASE_URL');
  });
});
