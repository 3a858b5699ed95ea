/**
 * The framing of a tar archive, for `deploy` to write around file bytes it streams itself
 * (through a few reused buffers, which a tar library's own queue would not let it reuse).
 * Regular files only: a POSIX ustar header each, preceded by a pax `path` record when the
 * name is longer than the header's 100 bytes. The server parses it with tar-stream.
 */

const BLOCK = 512;

/** Two zero blocks: the end of an archive. */
export const TAR_END: Buffer = Buffer.alloc(2 * BLOCK);

/** The zero bytes that follow `size` bytes of content up to the next 512-byte block. */
export function tarPadding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** What goes before a regular file's content in the archive: its header (and pax record). */
export function tarHeader(name: string, size: number): Buffer {
  if (Buffer.byteLength(name) <= 100) return ustar(name, size, '0');
  const record = paxRecord('path', name);
  return Buffer.concat([ustar('PaxHeader', record.length, 'x'), record, tarPadding(record.length), ustar('long-name', size, '0')]);
}

function ustar(name: string, size: number, type: '0' | 'x'): Buffer {
  if (!Number.isSafeInteger(size) || size < 0 || size >= 8 ** 11) throw new Error(`a tar entry holds 0 to 8 GiB; got ${size} bytes`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100);
  h.write('0000644\0', 100); // mode
  h.write('0000000\0', 108); // uid
  h.write('0000000\0', 116); // gid
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136); // mtime: the epoch (a bundle keeps no times)
  h.write(type, 156);
  h.write('ustar\x0000', 257); // magic and version
  h.write('        ', 148); // the checksum counts its own field as spaces
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return h;
}

/** `<length> <key>=<value>\n`, where the length counts the whole record, its own digits too. */
function paxRecord(key: string, value: string): Buffer {
  const rest = ` ${key}=${value}\n`;
  const bytes = Buffer.byteLength(rest);
  let digits = String(bytes).length;
  while (String(bytes + digits).length !== digits) digits++;
  return Buffer.from(`${bytes + digits}${rest}`);
}
