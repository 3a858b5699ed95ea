import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { randomBase62 } from './ids.js';

/** Encrypts secrets at rest (AES-256-GCM) and signs URLs, from the one server secret. */
export class Secrets {
  private readonly encKey: Buffer;
  private readonly signKey: Buffer;

  constructor(secret: string) {
    this.encKey = createHash('sha256').update(`enc:${secret}`).digest();
    this.signKey = createHash('sha256').update(`sign:${secret}`).digest();
  }

  encrypt(plain: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.encKey, iv);
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return `v1.${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
  }

  decrypt(sealed: string): string {
    const raw = Buffer.from(sealed.slice(3), 'base64url');
    const decipher = createDecipheriv('aes-256-gcm', this.encKey, raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
  }

  encryptJson(value: unknown): string {
    return this.encrypt(JSON.stringify(value));
  }

  decryptJson<T>(sealed: string): T {
    return JSON.parse(this.decrypt(sealed)) as T;
  }

  sign(payload: string): string {
    return createHmac('sha256', this.signKey).update(payload).digest('base64url');
  }

  verify(payload: string, signature: string): boolean {
    const expected = Buffer.from(this.sign(payload));
    const given = Buffer.from(signature);
    return expected.length === given.length && timingSafeEqual(expected, given);
  }
}

/** `sk_live_abcdef123` → `sk_l...f123`; under 12 characters → `****`. */
export function mask(secret: string): string {
  if (secret.length < 12) return '****';
  return `${secret.slice(0, 4)}...${secret.slice(-4)}`;
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function newApiKey(): string {
  return `dk-${randomBase62(40)}`;
}

export function newWebhookSecret(): string {
  return `whsec_${randomBase62(32)}`;
}
