import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Ctx } from '../core/context.js';
import { authenticate, requireOrganization, requireUser, type Principal } from '../core/keys.js';
import { registerRoutes } from '../api/index.js';
import { BadRequestError } from '../core/errors.js';
import { installErrorHandling } from './errors.js';
import { installIdempotency } from './idempotency.js';
import { validatorCompiler } from './validation.js';
import { checkHealth } from './health.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
    /** The stored hash of the calling API key (what Idempotency-Key is scoped to). */
    apiKeyHash?: string;
  }
}

export type Server = FastifyInstance;

export interface BuildOptions {
  logger?: boolean | object;
}

/** Builds the Fastify app; `serve` listens on it, tests inject into it or listen on port 0. */
export async function buildServer(ctx: Ctx, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: ctx.config.maxBodyBytes,
    // Long-polls hold requests for up to 60 s.
    requestTimeout: 0,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { coerceTypes: false } },
    // Path parameters hold identifiers of up to 256 characters, percent-encoded (the default is 100).
    routerOptions: { maxParamLength: 4096 },
    // The router rejects a bad percent-encoding or an over-long parameter before any handler: envelope those too.
    frameworkErrors: (err, _request, reply) => {
      const tooLong = err.code === 'FST_ERR_MAX_PARAM_LENGTH';
      (reply as unknown as FastifyReply).status(tooLong ? 414 : 400).send({ success: false, error: tooLong ? 'A path parameter is too long.' : 'The URL is not valid.', code: 'invalid_request' });
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // A request with `Content-Type: application/json` and no body at all (clients that set the
  // header on every call, a DELETE included) has no body, as one without the header: the
  // endpoint's schema then decides whether it needed one. Anything else parses as Fastify does.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, text, done) => {
    if (text === '') return done(null, undefined);
    parseJson(request, text as string, done);
  });

  app.setValidatorCompiler(validatorCompiler);
  installErrorHandling(app);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Harnesslayer API', version: '1.0.0', description: 'Host agent apps for many end users.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'dk-...' } } },
      security: [{ bearer: [] }],
    },
    // Routes that check their own token (signed URLs, inbound webhooks) take no API key: say so.
    transform: ({ schema, url, route }) => ({ schema: route.config?.public ? { ...schema, security: [] } : schema, url }),
  });

  app.get('/healthz', { schema: { hide: true } }, async (_req, reply) => {
    const health = await checkHealth(ctx);
    return reply.status(health.ok ? 200 : 503).send(
      health.ok ? { success: true, data: { status: 'ok', ...health.detail } } : { success: false, error: 'unhealthy', code: 'unhealthy', details: health.detail },
    );
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  // Auth once, for every /v1 route: organization endpoints take a user key, the rest an
  // organization key. Unknown routes skip this and get their 404.
  app.addHook('onRequest', async (request: FastifyRequest, _reply: FastifyReply) => {
    const url = request.routeOptions.url;
    if (!url || !url.startsWith('/v1/') || request.routeOptions.config?.public) return;
    const { principal, keyHash } = await authenticate(ctx.db, request.headers.authorization);
    if (url.startsWith('/v1/organization/')) requireUser(principal);
    else requireOrganization(principal);
    request.principal = principal;
    request.apiKeyHash = keyHash;
  });

  // Before the checks below and the schema's: a refusal of the body is a first reply too, kept
  // and replayed like any other (CONTRACT §9).
  installIdempotency(app, ctx);

  // Endpoints that document no body fields (DELETEs, `state/download/{id}`) take no body or `{}`,
  // and those that document no query parameters take none: anything else is refused as a
  // body or query with a schema would be, never silently ignored (a DELETE with a mistyped
  // parameter deletes nothing).
  app.addHook('preValidation', async (request: FastifyRequest) => {
    const url = request.routeOptions.url;
    if (!url || !url.startsWith('/v1/') || request.routeOptions.config?.public) return;
    if (!request.routeOptions.schema?.querystring) {
      const param = Object.keys((request.query as Record<string, unknown> | undefined) ?? {})[0];
      if (param !== undefined) throw new BadRequestError(`querystring.${param}: unknown property "${param}" is not allowed (this endpoint takes no query parameters).`);
    }
    if (request.routeOptions.schema?.body) return;
    const given = request.body as unknown;
    if (given === undefined) return;
    if (given === null || typeof given !== 'object' || Array.isArray(given)) throw new BadRequestError('This endpoint takes no body fields: send no body, or {}.');
    const extra = Object.keys(given)[0];
    if (extra !== undefined) throw new BadRequestError(`body.${extra}: unknown property "${extra}" is not allowed (this endpoint takes no body fields).`);
  });

  await registerRoutes(app, ctx);
  return app;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** No API key (inbound webhooks, signed blob URLs): the route checks its own token. */
    public?: boolean;
  }
}

/** The organization of the calling key (auth already checked the kind). */
export function orgOf(request: FastifyRequest): string {
  return requireOrganization(request.principal!);
}

export function userOf(request: FastifyRequest): string {
  return requireUser(request.principal!);
}
