import type { Socket } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import { Type } from 'typebox';
import type { Ctx } from '../core/context.js';
import { parseDownloadToken, targetFiles, zipStream } from '../core/downloads.js';
import { receiveBatch, receivedUpload, receivingUpload } from '../core/uploads.js';
import { AppError, BadRequestError, ForbiddenError, NotFoundError, PayloadTooLargeError } from '../core/errors.js';
import { hashRef } from '../core/trees.js';
import { HashMismatchError, LocalBlobStore, TooLargeError } from '../storage/blobs/index.js';
import { envelope } from '../server/schemas.js';
import type { Api } from './index.js';

/**
 * Public routes of the signed URLs this server issues (no API key; each checks its own
 * signature): the local driver's upload PUT and the archive downloads.
 */
export function blobRoutes(app: Api, ctx: Ctx): void {
  void app.register(async (scope: Api) => {
    // Upload bodies are raw bytes, streamed into the store, never buffered or parsed, whatever
    // Content-Type they come with (a JSON file sent as application/json is a file like any other).
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    // An answer sent before the whole body was read (a refused token or size, a bad parameter,
    // a rejected batch) closes the connection: Node would otherwise keep the socket and
    // discard the rest of the announced body first (up to any Content-Length, 2^40 say), and a
    // keep-alive client's next request on it would wait behind that.
    scope.addHook('onSend', async (request, reply) => {
      if (!request.raw.complete) {
        reply.header('connection', 'close');
        lingerBeforeClosing(request.raw.socket);
      }
    });

    scope.put(
      '/v1/blobs/upload/:upload_id/:index',
      {
        config: { public: true },
        schema: {
          tags: ['blobs'],
          summary: 'Signed upload URL of the local blob store: PUT the raw bytes (Content-Type: application/octet-stream).',
          params: Type.Object({ upload_id: Type.String({ minLength: 1, maxLength: 128 }), index: Type.Integer({ minimum: 0, maximum: 9_999 }) }),
          querystring: Type.Object({ h: Type.String({ maxLength: 64 }), exp: Type.Integer({ minimum: 0 }), sig: Type.String({ maxLength: 128 }) }),
          response: { 200: envelope(Type.Object({ uploadId: Type.String(), index: Type.Integer(), hash: Type.String(), size: Type.Number() })) },
        },
      },
      async (request) => {
        const store = ctx.blobs;
        if (!(store instanceof LocalBlobStore)) throw new NotFoundError('upload URL');
        const { upload_id: uploadId, index } = request.params;
        const { h: hash, exp, sig } = request.query;
        const check = store.checkUploadToken({ uploadId, index, hash, exp, sig }, ctx.now());
        if (check === 'invalid') throw new ForbiddenError('This upload URL is invalid or was altered; use the URL exactly as issued.');
        if (check === 'expired') throw new ForbiddenError('This upload URL has expired (URLs last 15 minutes); request new upload URLs.');
        const limit = ctx.config.maxBundleBytes;
        if (Number(request.headers['content-length'] ?? 0) > limit) throw new PayloadTooLargeError(`A file may hold at most ${limit} bytes.`);
        const body = shielded((request.body as Readable | undefined) ?? request.raw);
        await receivingUpload(ctx, uploadId, body);
        try {
          const size = await store.receive(uploadId, index, hash, body, limit);
          await receivedUpload(ctx, uploadId);
          return { success: true as const, data: { uploadId, index, hash: hashRef(hash), size } };
        } catch (err) {
          if (err instanceof HashMismatchError) throw new BadRequestError(`Rejected: ${err.message}; nothing was stored.`, { expected: hashRef(err.expected), actual: hashRef(err.actual) });
          if (err instanceof TooLargeError) throw new PayloadTooLargeError(`A file may hold at most ${limit} bytes; nothing was stored.`);
          if ((err as { code?: string }).code === 'ERR_STREAM_PREMATURE_CLOSE') throw new BadRequestError('The upload was interrupted; nothing was stored.');
          throw err;
        }
      },
    );

    scope.put(
      '/v1/blobs/upload/:upload_id',
      {
        config: { public: true },
        schema: {
          tags: ['blobs'],
          summary:
            'Signed batch upload URL of the local blob store (`batchUrl` of an upload): PUT a tar (Content-Type: application/x-tar) whose entries are declared files of the upload, entry name = file name. Each entry is checked against its declared hash like its own PUT.',
          params: Type.Object({ upload_id: Type.String({ minLength: 1, maxLength: 128 }) }),
          querystring: Type.Object({ exp: Type.Integer({ minimum: 0 }), sig: Type.String({ maxLength: 128 }) }),
          response: { 200: envelope(Type.Object({ uploadId: Type.String(), stored: Type.Integer() })) },
        },
      },
      async (request) => {
        const store = ctx.blobs;
        if (!(store instanceof LocalBlobStore)) throw new NotFoundError('upload URL');
        const { upload_id: uploadId } = request.params;
        const check = store.checkBatchToken({ uploadId, exp: request.query.exp, sig: request.query.sig }, ctx.now());
        if (check === 'invalid') throw new ForbiddenError('This upload URL is invalid or was altered; use the URL exactly as issued.');
        if (check === 'expired') throw new ForbiddenError('This upload URL has expired (URLs last 15 minutes); request new upload URLs.');
        const body = shielded((request.body as Readable | undefined) ?? request.raw);
        const result = await receiveBatch(ctx, store, uploadId, body);
        if (result.mismatched.length > 0 || result.unknown.length > 0) {
          const names = [...result.mismatched.map((m) => `${m.name} (hash mismatch)`), ...result.unknown.map((n) => `${n} (not a declared file)`)];
          throw new BadRequestError(
            `Rejected ${names.length} archive entr${names.length === 1 ? 'y' : 'ies'}: ${names.slice(0, 20).join(', ')}${names.length > 20 ? ', …' : ''}. Nothing was stored for them; the ${result.stored} other files were stored.`,
            result,
          );
        }
        return { success: true as const, data: { uploadId, stored: result.stored } };
      },
    );
  });

  app.get(
    '/v1/download/:token',
    {
      config: { public: true },
      schema: { tags: ['blobs'], summary: 'Signed download URL: a zip of a version or state.', params: Type.Object({ token: Type.String({ minLength: 1, maxLength: 2048 }) }) },
    },
    async (request, reply) => {
      const target = parseDownloadToken(ctx, request.params.token);
      const { files, createdAt } = await targetFiles(ctx, target).catch((err: unknown) => {
        if (err instanceof AppError) throw new NotFoundError(target.kind, target.id);
        throw err;
      });
      return reply
        .type('application/zip')
        .header('content-disposition', `attachment; filename="${target.id}.zip"`)
        .header('cache-control', 'private, no-store')
        .send(await zipStream(ctx, files, createdAt));
    },
  );
}

/** How long a connection closed after an early answer goes on taking in what the client still sends. */
const LINGER_MS = 2_000;

/**
 * Closes the connection after an answer sent before its request's body was read to the end,
 * without losing that answer. Node closes such a socket as soon as the answer is written; with
 * the client's bytes still unread in it, the kernel then resets the connection, and a client
 * still sending its body can see the reset (write EPIPE, ECONNRESET) before it reads the 413
 * that explains it. Instead the server half-closes (its FIN follows the answer) and reads and
 * discards what still comes until the client closes too, for at most LINGER_MS: the staged
 * close of RFC 9112 §9.6.
 */
function lingerBeforeClosing(socket: Socket | null): void {
  if (!socket || socket.destroyed) return;
  // Node's server calls destroySoon once the answer of a `connection: close` reply is written.
  socket.destroySoon = function (this: Socket) {
    this.end();
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    timer.unref();
    this.once('close', () => clearTimeout(timer));
    this.resume();
  };
}

/**
 * A request body as a stream of its own. A pipeline that fails (a refused size or archive)
 * destroys its source; destroying the request itself would reset the connection under the
 * answer (see lingerBeforeClosing). This one only stops taking the body, whose rest is then
 * read and discarded until the connection closes. A body that breaks off (the client went
 * away) ends it with the premature-close error a pipeline reports, which the routes answer
 * with a 400, also when it happens before the store starts reading.
 */
export function shielded(body: Readable): Readable {
  const out = new PassThrough();
  // The store attaches after a database round trip: an error before that is kept
  // (`out.errored`, which the store's pipeline reports), never thrown as unhandled.
  out.on('error', () => {});
  const interrupted = () => {
    if (!body.readableEnded) out.destroy(Object.assign(new Error('The upload was interrupted.'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
  };
  body.pipe(out);
  body.once('error', interrupted);
  body.once('close', interrupted);
  out.once('close', () => {
    body.unpipe(out);
    body.resume();
  });
  return out;
}
