import dns from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import type { Config } from '../config.js';
import { BadRequestError } from './errors.js';

/**
 * The private-address guard: outbound calls (webhooks, channel webhooks) may only reach
 * public addresses, so a tenant cannot make the server call its own loopback, the cloud
 * metadata service (169.254.169.254) or the internal network.
 *
 * Two checks, because DNS answers can change between them: `assertPublicUrl` when a URL is
 * accepted (400 with a reason), and `publicLookup` when a socket connects (delivery code
 * passes it as the `lookup` option; Node skips `lookup` for IP literals, so delivery must
 * also run `assertPublicUrl` on the URL first).
 */

// [network, prefix] of every IPv4 range that is not a public unicast address.
const IPV4_BLOCKED: [string, number][] = [
  ['0.0.0.0', 8], // "this network", includes the unspecified 0.0.0.0
  ['10.0.0.0', 8], // private
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local (cloud metadata lives here)
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and 255.255.255.255 broadcast
];

const IPV6_BLOCKED: [string, number][] = [
  ['::', 96], // unspecified, loopback ::1 and the deprecated IPv4-compatible form
  ['64:ff9b:1::', 48], // local-use NAT64
  ['100::', 64], // discard-only
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique-local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // deprecated site-local
  ['ff00::', 8], // multicast
];

function toHex16(a: number, b: number): string {
  return ((a << 8) | b).toString(16);
}

const blockList = new BlockList();
for (const [net, prefix] of IPV4_BLOCKED) {
  blockList.addSubnet(net, prefix, 'ipv4');
  // The same IPv4 range reached through an IPv6 wrapper: NAT64 (64:ff9b::/96), IPv4-translated
  // (::ffff:0:a.b.c.d, SIIT) and 6to4 (2002:AABB:CCDD::/48). IPv4-mapped (::ffff:a.b.c.d)
  // BlockList already checks as IPv4.
  const [a, b, c, d] = net.split('.').map(Number);
  blockList.addSubnet(`64:ff9b::${net}`, 96 + prefix, 'ipv6');
  blockList.addSubnet(`::ffff:0:${net}`, 96 + prefix, 'ipv6');
  blockList.addSubnet(`2002:${toHex16(a, b)}:${toHex16(c, d)}::`, 16 + prefix, 'ipv6');
}
for (const [net, prefix] of IPV6_BLOCKED) blockList.addSubnet(net, prefix, 'ipv6');

/**
 * True when `ip` (a literal IPv4 or IPv6 address) is anything but a public unicast address.
 * Something that is not an IP literal counts as private: fail closed.
 */
export function isPrivateAddress(ip: string): boolean {
  // A zone index (fe80::1%eth0) is not part of the address.
  const address = ip.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = isIP(address);
  if (family === 0) return true;
  return blockList.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

export type Resolver = (hostname: string) => Promise<string[]>;

/** Every address the system resolver gives for a name (as a socket would see them). */
export const systemResolver: Resolver = async (hostname) => {
  const answers = await dns.promises.lookup(hostname, { all: true, verbatim: true });
  return answers.map((a) => a.address);
};

function refuse(url: string, why: string): never {
  throw new BadRequestError(`URL "${url}" is not allowed: ${why}.`);
}

/**
 * Throws a 400 unless `url` is an http(s) URL whose host is a public address, or a name
 * all of whose addresses are public. The address check is skipped when `allowPrivateUrls` is
 * set (tests, or a self-hosted server that means to call its own network); the URL must be a
 * valid http(s) URL either way.
 *
 * WHATWG URL parsing already turns every IPv4 spelling of an http(s) host (`127.1`,
 * `2130706433`, `0x7f.1`, `0177.0.0.1`) into dotted decimal, so only the canonical form
 * needs checking. A name that does not resolve now is accepted: it reaches nothing, and the
 * connect-time check covers whatever it resolves to later.
 */
export async function assertPublicUrl(
  config: Pick<Config, 'allowPrivateUrls'>,
  url: string,
  resolve: Resolver = systemResolver,
): Promise<void> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return refuse(url, 'it is not a valid URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return refuse(url, 'only http and https URLs are allowed');
  if (config.allowPrivateUrls) return;
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) {
    if (isPrivateAddress(host)) refuse(url, `${host} is a loopback, private or otherwise non-public address`);
    return;
  }
  const name = host.replace(/\.$/, '').toLowerCase();
  // RFC 6761: localhost names are loopback whatever a resolver says.
  if (name === 'localhost' || name.endsWith('.localhost')) refuse(url, `${host} is a loopback name`);
  let addresses: string[];
  try {
    addresses = await resolve(name);
  } catch {
    return;
  }
  const bad = addresses.find(isPrivateAddress);
  if (bad) refuse(url, `${host} resolves to ${bad}, a loopback, private or otherwise non-public address`);
}

/**
 * A `lookup` for sockets (http.request, net.connect, undici `connect.lookup`) that fails
 * with EPRIVATEADDRESS when the name resolves to any non-public address, so a DNS answer
 * that changed since `assertPublicUrl` still cannot reach the private network.
 */
export const publicLookup = ((hostname: string, options: dns.LookupOptions, callback: (...args: unknown[]) => void) => {
  dns.lookup(hostname, { ...options, all: true }, (err, answers) => {
    if (err) return callback(err);
    const bad = answers.find((a) => isPrivateAddress(a.address));
    if (bad || answers.length === 0) {
      const refused = Object.assign(new Error(`${hostname} resolves to ${bad?.address ?? 'nothing'}, which outbound calls may not reach`), {
        code: 'EPRIVATEADDRESS',
        hostname,
      });
      return callback(refused);
    }
    if (options.all) return callback(null, answers);
    return callback(null, answers[0].address, answers[0].family);
  });
}) as unknown as LookupFunction;
