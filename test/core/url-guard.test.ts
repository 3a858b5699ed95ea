import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError } from '../../src/core/errors.js';
import { assertPublicUrl, isPrivateAddress, publicLookup, type Resolver } from '../../src/core/url-guard.js';

const guarded = { allowPrivateUrls: false };
const noDns: Resolver = async () => {
  throw new Error('this test must not need DNS');
};

async function refused(url: string, resolve: Resolver = noDns): Promise<BadRequestError> {
  const err = await assertPublicUrl(guarded, url, resolve).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, url).toBeInstanceOf(BadRequestError);
  expect((err as BadRequestError).status).toBe(400);
  return err as BadRequestError;
}

describe('isPrivateAddress', () => {
  it.each([
    '127.0.0.1',
    '127.255.255.254',
    '10.0.0.1',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '100.127.255.255',
    '0.0.0.0',
    '224.0.0.1',
    '239.255.255.250',
    '255.255.255.255',
    '::',
    '::1',
    'fe80::1',
    'fe80::1%eth0',
    'fc00::1',
    'fd12:3456::1',
    'ff02::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:10.1.2.3',
    '::ffff:169.254.169.254',
    '64:ff9b::127.0.0.1',
    '::ffff:0:127.0.0.1', // IPv4-translated (SIIT)
    '::ffff:0:a9fe:a9fe',
    '2002:7f00:1::',
    '[::1]',
    'not-an-address',
  ])('refuses %s', (ip) => {
    expect(isPrivateAddress(ip)).toBe(true);
  });

  it.each(['8.8.8.8', '1.1.1.1', '93.184.215.14', '172.32.0.1', '100.128.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8', '64:ff9b::8.8.8.8', '::ffff:0:8.8.8.8'])(
    'allows %s',
    (ip) => {
      expect(isPrivateAddress(ip)).toBe(false);
    },
  );
});

describe('assertPublicUrl', () => {
  it.each([
    'http://127.0.0.1/hook',
    'http://127.1/hook',
    'http://2130706433/hook',
    'http://0x7f.1/hook',
    'http://0x7f000001/hook',
    'http://0177.0.0.1/hook',
    'http://127.0.0.1./hook',
    'https://10.0.0.5:8443/hook',
    'http://169.254.169.254/latest/meta-data/',
    'http://100.64.1.1/',
    'http://0.0.0.0:8080/',
    'http://0/',
    'http://[::1]:8080/',
    'http://[::]/',
    'http://[::ffff:127.0.0.1]/',
    'http://[::ffff:a9fe:a9fe]/',
    'http://[fe80::1]/',
    'http://[fd00::1]/',
    'http://224.0.0.1/',
    'http://localhost:3000/hook',
    'http://LOCALHOST./hook',
    'http://api.localhost/hook',
  ])('refuses %s', async (url) => {
    const err = await refused(url);
    expect(err.message).toContain('not allowed');
  });

  it.each(['ftp://8.8.8.8/x', 'file:///etc/passwd', 'gopher://8.8.8.8/', 'javascript:alert(1)', 'not a url', 'http://[fe80::1%25eth0]/'])(
    'refuses the non-http(s) or malformed %s',
    async (url) => {
      await refused(url);
    },
  );

  it('refuses a name that resolves to a private address, even if only one of its addresses is', async () => {
    const err = await refused('https://internal.example.com/hook', async () => ['8.8.8.8', '10.1.2.3']);
    expect(err.message).toContain('10.1.2.3');
    await refused('https://rebind.example.com/hook', async () => ['::ffff:127.0.0.1']);
  });

  it('asks the resolver for the bare host name', async () => {
    const asked: string[] = [];
    await assertPublicUrl(guarded, 'https://User:pw@Hooks.Example.COM.:8443/a?b#c', async (h) => {
      asked.push(h);
      return ['93.184.215.14'];
    });
    expect(asked).toEqual(['hooks.example.com']);
  });

  it('allows public addresses and names that resolve only to public addresses', async () => {
    await assertPublicUrl(guarded, 'https://93.184.215.14/hook', noDns);
    await assertPublicUrl(guarded, 'http://[2606:4700:4700::1111]/hook', noDns);
    await assertPublicUrl(guarded, 'https://hooks.example.com/hook', async () => ['93.184.215.14', '2606:2800:220:1::']);
  });

  it('accepts a name that does not resolve yet (the connect-time check covers it)', async () => {
    await assertPublicUrl(guarded, 'https://not-yet.example.com/hook', async () => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' });
    });
  });

  it('refuses localhost through the system resolver too', async () => {
    // The name check comes first; the resolver path is covered with an injected resolver.
    await expect(assertPublicUrl(guarded, 'http://localhost/')).rejects.toBeInstanceOf(BadRequestError);
  });

  it('checks no address when private URLs are allowed, but still refuses what is not an http(s) URL', async () => {
    await assertPublicUrl({ allowPrivateUrls: true }, 'http://127.0.0.1/hook', noDns);
    await assertPublicUrl({ allowPrivateUrls: true }, 'http://localhost:1234/hook', noDns);
    for (const url of ['http://', 'https://example.com:99999/', 'ftp://example.com/', 'not a url']) {
      await expect(assertPublicUrl({ allowPrivateUrls: true }, url, noDns)).rejects.toBeInstanceOf(BadRequestError);
    }
  });
});

describe('publicLookup (connect time)', () => {
  let server: http.Server;
  let port: number;
  beforeAll(async () => {
    server = http.createServer((_req, res) => res.end('reached'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => new Promise<void>((r) => server.close(() => r())));

  function get(lookup?: typeof publicLookup): Promise<string> {
    return new Promise((resolve, reject) => {
      // agent: false so every request opens (and looks up) its own socket.
      const req = http.get({ host: 'localhost', port, path: '/', family: 4, agent: false, ...(lookup ? { lookup } : {}) }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve(text));
      });
      req.on('error', reject);
    });
  }

  it('lets a normal lookup reach the local server (control)', async () => {
    expect(await get()).toBe('reached');
  });

  it('refuses to connect when the name resolves to loopback', async () => {
    await expect(get(publicLookup)).rejects.toMatchObject({ code: 'EPRIVATEADDRESS' });
  });
});
