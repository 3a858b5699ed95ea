import type { FastifyError, FastifyInstance } from 'fastify';
import { AppError, StorageUnavailableError } from '../core/errors.js';
import { describeValidation } from './validation.js';

export interface ErrorBody {
  success: false;
  error: string;
  code?: string;
  details?: unknown;
}

/**
 * Failures of the machine's storage, not of the request or the code: the disk is full, gone
 * read-only, or failed a write or flush. The request did not complete and can be retried.
 */
const STORAGE_FAILURES: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EIO: 'input/output error',
  EROFS: 'the file system is read-only',
};

/** A system call's storage failure, as the 503 it answers; undefined for anything else. */
function storageFailure(err: Error): StorageUnavailableError | undefined {
  const io = err as NodeJS.ErrnoException;
  if (!io.syscall || !io.code || !Object.hasOwn(STORAGE_FAILURES, io.code)) return undefined;
  return new StorageUnavailableError(
    `The server's storage failed (${io.code}: ${STORAGE_FAILURES[io.code]}); the request did not complete. Try again later; if it persists, whoever runs this server should check the disk holding its data directory.`,
  );
}

function body(error: string, code: string, details?: unknown): ErrorBody {
  return details === undefined ? { success: false, error, code } : { success: false, error, code, details };
}

/** The one place errors become envelopes. Anything unexpected is logged and is a 500. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((thrown: FastifyError | AppError | Error, request, reply) => {
    const err = storageFailure(thrown) ?? thrown;
    if (err instanceof StorageUnavailableError) request.log.error({ err: thrown }, 'storage failure');
    if (err instanceof AppError) {
      return reply.status(err.status).send(body(err.message, err.code, err.details));
    }
    const fe = err as FastifyError;
    if (fe.validation) {
      const { message, details } = describeValidation(fe.validation as never, fe.validationContext ?? 'request');
      return reply.status(400).send(body(message, 'validation_failed', details));
    }
    switch (fe.code) {
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
        return reply.status(400).send(body(`The request body is not valid JSON: ${fe.message}`, 'invalid_json'));
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return reply.status(413).send(body('The request body is too large.', 'payload_too_large'));
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return reply.status(400).send(body(`The body must be a JSON object sent as Content-Type: application/json.`, 'invalid_request'));
      case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
        return reply.status(400).send(body('Content-Length does not match the body.', 'invalid_request'));
    }
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply.status(fe.statusCode).send(body(fe.message, 'invalid_request'));
    }
    request.log.error({ err }, 'unhandled error');
    return reply.status(500).send(body('Internal server error. This is a bug; the server log has the details.', 'internal_error'));
  });

  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send(body(`No route ${request.method} ${request.url.split('?')[0]}`, 'not_found'));
  });
}
