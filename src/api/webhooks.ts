import { Type } from 'typebox';
import type { Ctx } from '../core/context.js';
import {
  WEBHOOK_EVENTS,
  WEBHOOK_METHODS,
  createWebhook,
  deleteWebhook,
  findWebhook,
  listWebhooks,
  updateWebhook,
  webhookView,
  type HeaderMap,
} from '../core/webhooks.js';
import { orgOf } from '../server/app.js';
import { AppRef, Id, Int32, Nullable, PageQuery, Timestamp, body, envelope, page, query } from '../server/schemas.js';
import type { Api } from './index.js';

/** An outbound URL; the private-address guard runs in core (it needs DNS). */
export const OutboundUrl = Type.String({ minLength: 1, maxLength: 2048, format: 'uri', pattern: '^https?://' });

/** String-to-string HTTP headers: token names, values without line breaks. */
export const HeaderMapInput = Type.Unsafe<HeaderMap>({
  type: 'object',
  maxProperties: 50,
  propertyNames: { minLength: 1, maxLength: 256, pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$" },
  additionalProperties: { type: 'string', maxLength: 8192, pattern: '^[^\\r\\n\\u0000]*$' },
});

export const HeaderMapOutput = Type.Record(Type.String(), Type.String());

const Event = Type.Enum([...WEBHOOK_EVENTS]);
const Method = Type.Enum([...WEBHOOK_METHODS]);

const WebhookSchema = Type.Object({
  id: Type.String(),
  appId: Type.String(),
  event: Type.String(),
  method: Type.String(),
  url: Type.String(),
  headers: Nullable(HeaderMapOutput),
  secret: Type.Optional(Type.String()),
  runCount: Type.Integer(),
  lastTriggeredAt: Nullable(Type.String()),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

const Params = Type.Object({ webhook_id: Id });

export function webhookRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/webhook/create',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Create an app webhook for a supported event. The reply carries its signing secret, once.',
        body: body({ appId: AppRef, event: Event, method: Type.Optional(Method), url: OutboundUrl, headers: Type.Optional(HeaderMapInput) }),
        response: { 200: envelope(WebhookSchema) },
      },
    },
    async (request) => {
      const { webhook, secret } = await createWebhook(ctx, orgOf(request), request.body);
      return { success: true as const, data: webhookView(ctx, webhook, { secret }) };
    },
  );

  app.post(
    '/v1/webhook/update',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Update an existing webhook configuration (headers or lastTriggeredAt: null clears them).',
        // One of webhookId / id names the webhook (core also rejects two different ones).
        body: Type.Object(
          {
            webhookId: Type.Optional(Id),
            id: Type.Optional(Id),
            event: Type.Optional(Event),
            method: Type.Optional(Method),
            url: Type.Optional(OutboundUrl),
            headers: Type.Optional(Nullable(HeaderMapInput)),
            lastTriggeredAt: Type.Optional(Nullable(Timestamp)),
            runCount: Type.Optional(Int32),
          },
          { additionalProperties: false, anyOf: [{ required: ['webhookId'] }, { required: ['id'] }] },
        ),
        response: { 200: envelope(WebhookSchema) },
      },
    },
    async (request) => ({ success: true as const, data: webhookView(ctx, await updateWebhook(ctx, orgOf(request), request.body)) }),
  );

  app.get(
    '/v1/webhook/list',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Return paginated webhooks for an app.',
        querystring: query({ appId: AppRef, ...PageQuery }),
        response: { 200: envelope(page(WebhookSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listWebhooks(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/webhook/:webhook_id',
    { schema: { tags: ['webhooks'], summary: 'Return one webhook.', params: Params, response: { 200: envelope(WebhookSchema) } } },
    async (request) => ({ success: true as const, data: webhookView(ctx, await findWebhook(ctx.db, orgOf(request), request.params.webhook_id)) }),
  );

  app.delete(
    '/v1/webhook/:webhook_id',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Delete a webhook.',
        params: Params,
        response: { 200: envelope(Type.Object({ id: Type.String(), deleted: Type.Literal(true) })) },
      },
    },
    async (request) => ({ success: true as const, data: await deleteWebhook(ctx, orgOf(request), request.params.webhook_id) }),
  );
}
