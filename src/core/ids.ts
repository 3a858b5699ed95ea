import { randomBytes } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** Uniform random base62 (rejection sampling, no modulo bias). */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += ALPHABET[byte % 62];
    }
  }
  return out;
}

export const ID_PREFIXES = {
  organization: 'org',
  app: 'app',
  version: 'ver',
  accessGroup: 'ag',
  channel: 'ch',
  instance: 'inst',
  session: 'sess',
  profile: 'prof',
  webhook: 'wh',
  state: 'state',
  upload: 'upload',
  sync: 'sync',
  conflict: 'conf',
  history: 'hist',
  user: 'usr',
} as const;

export type IdKind = keyof typeof ID_PREFIXES;

/** Display id: prefix + 16 base62 chars (~95 bits). */
export function newId(kind: IdKind): string {
  return `${ID_PREFIXES[kind]}-${randomBase62(16)}`;
}

export function hasPrefix(kind: IdKind, value: string): boolean {
  return value.startsWith(`${ID_PREFIXES[kind]}-`);
}
