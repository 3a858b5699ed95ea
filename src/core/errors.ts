/**
 * Typed errors. Core code throws these; one renderer (src/server/errors.ts) turns them
 * into the envelope. Anything that is not an AppError is a bug and renders as a 500.
 */
export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

export class BadRequestError extends AppError {
  constructor(message: string, details?: unknown, code = 'invalid_request') {
    super(400, code, message, details);
  }
}

export class UnauthorizedError extends AppError {
  constructor(message = 'Missing or unknown API key. Send "Authorization: Bearer dk-...".') {
    super(401, 'unauthorized', message);
  }
}

export class ForbiddenError extends AppError {
  constructor(message: string) {
    super(403, 'forbidden', message);
  }
}

export class NotFoundError extends AppError {
  constructor(resource: string, id?: string) {
    super(404, 'not_found', id === undefined ? `${resource} not found` : `${resource} "${id}" not found`);
  }
}

export class ConflictError extends AppError {
  constructor(message: string, code = 'conflict', details?: unknown) {
    super(409, code, message, details);
  }
}

export class PayloadTooLargeError extends AppError {
  constructor(message: string) {
    super(413, 'payload_too_large', message);
  }
}

/** The machine's storage (disk, blob store) failed or did not answer: try again later. */
export class StorageUnavailableError extends AppError {
  constructor(message: string) {
    super(503, 'storage_unavailable', message);
  }
}

export class LimitExceededError extends AppError {
  constructor(message: string) {
    super(429, 'limit_exceeded', message);
  }
}

/** Every error code the API can answer with, for the docs test. */
export const ERROR_CODES = [
  'invalid_request',
  'invalid_json',
  'validation_failed',
  'unauthorized',
  'forbidden',
  'not_found',
  'conflict',
  'slug_taken',
  'head_moved',
  'no_head_version',
  'idempotency_key_reused',
  'idempotency_in_progress',
  'payload_too_large',
  'limit_exceeded',
  'storage_unavailable',
  'internal_error',
] as const;
