import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { TAR_END, tarHeader, tarPadding } from '../src/sdk/tar.js';

// `deploy` frames its batch tars itself; the server reads them with tar-stream.

async function extract(archive: Buffer): Promise<{ name: string; type: string; bytes: Buffer }[]> {
  const out: { name: string; type: string; bytes: Buffer }[] = [];
  const parser = tar.extract();
  Readable.from([archive]).pipe(parser);
  for await (const entry of parser) {
    const parts: Buffer[] = [];
    for await (const chunk of entry) parts.push(chunk as Buffer);
    out.push({ name: entry.header.name, type: entry.header.type ?? '', bytes: Buffer.concat(parts) });
  }
  return out;
}

describe('tar framing', () => {
  it('reads back as the same regular files, names of any length included', async () => {
    const files = [
      { name: 'a.md', bytes: Buffer.from('hello\n') },
      { name: 'empty', bytes: Buffer.alloc(0) },
      { name: 'exactly-one-block.bin', bytes: randomBytes(512) },
      { name: 'one-more.bin', bytes: randomBytes(513) },
      { name: `${'d'.repeat(99)}/x`, bytes: randomBytes(1000) }, // 101 bytes: past the ustar name
      { name: `${'deep/'.repeat(180)}note.md`, bytes: Buffer.from('far down\n') }, // 907 bytes: a 3-digit pax length
      { name: `notes/${'é'.repeat(60)}.md`, bytes: Buffer.from('accents\n') }, // 60 characters, 120 bytes
      { name: 'x'.repeat(100), bytes: Buffer.from('exactly 100 bytes of name\n') },
    ];
    const archive = Buffer.concat([...files.flatMap((f) => [tarHeader(f.name, f.bytes.length), f.bytes, tarPadding(f.bytes.length)]), TAR_END]);
    expect(archive.length % 512).toBe(0);
    const read = await extract(archive);
    expect(read.map((e) => e.name)).toEqual(files.map((f) => f.name));
    expect(read.every((e) => e.type === 'file')).toBe(true);
    read.forEach((e, i) => expect(e.bytes.equals(files[i].bytes), files[i].name).toBe(true));
  });

  it('pads to the next block and refuses sizes a header cannot hold', () => {
    expect([0, 1, 511, 512, 513].map((n) => tarPadding(n).length)).toEqual([0, 511, 1, 0, 511]);
    expect(() => tarHeader('big', 8 ** 11)).toThrow(/0 to 8 GiB/);
    expect(() => tarHeader('negative', -1)).toThrow(/0 to 8 GiB/);
  });
});
