import { PassThrough, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { shielded } from '../../src/api/blobs.js';

const sink = () => new Writable({ write: (_chunk, _enc, done) => done() });

describe('shielded: an upload body between the request and the store', () => {
  it('a client that goes away before the store reads is a premature close the store is told of, never an unhandled error', async () => {
    const request = new PassThrough();
    const body = shielded(request);
    request.write('the first bytes');
    request.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
    await new Promise((resolve) => setImmediate(resolve)); // the error is out before anyone reads
    await expect(pipeline(body, sink())).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });

  it('a store that stops reading (a refused size) leaves the request whole, and reading on', async () => {
    const request = new PassThrough();
    const body = shielded(request);
    request.write(Buffer.alloc(1024));
    const refused = pipeline(
      body,
      new Writable({ write: (_chunk, _enc, done) => done(new Error('too large')) }),
    );
    await expect(refused).rejects.toThrow('too large');
    expect(request.destroyed).toBe(false);
    expect(request.readableFlowing).toBe(true);
    request.end(Buffer.alloc(1024)); // the rest is read and dropped
    await new Promise((resolve) => request.once('end', resolve));
  });

  it('passes a whole body through', async () => {
    const request = new PassThrough();
    const body = shielded(request);
    const chunks: Buffer[] = [];
    const done = pipeline(body, new Writable({ write: (chunk, _enc, cb) => (chunks.push(chunk), cb()) }));
    request.end('all of it');
    await done;
    expect(Buffer.concat(chunks).toString()).toBe('all of it');
  });
});
