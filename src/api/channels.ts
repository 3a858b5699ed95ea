import { Type } from 'typebox';
import { findApp } from '../core/apps.js';
import { channelView, createChannel, deleteChannel, findChannel, listChannels, updateChannel } from '../core/channels.js';
import type { Ctx } from '../core/context.js';
import { orgOf } from '../server/app.js';
import { AppRef, Id, Name, Nullable, PageQuery, Slug, body, envelope, page, query } from '../server/schemas.js';
import type { Api } from './index.js';
import { HeaderMapInput, HeaderMapOutput, OutboundUrl } from './webhooks.js';

const Secret = Type.String({ minLength: 1, maxLength: 4096 });

const ChannelSchema = Type.Object({
  id: Type.String(),
  appId: Type.String(),
  slug: Type.String(),
  name: Type.String(),
  type: Type.String(),
  webhook: Type.Optional(
    Type.Object({ name: Nullable(Type.String()), url: Type.String(), headers: Nullable(HeaderMapOutput), secret: Type.Optional(Type.String()) }),
  ),
  data: Type.Optional(
    Type.Object({
      sendBlueAPIKey: Type.String(),
      sendBlueSecretKey: Type.String(),
      fromNumber: Type.String(),
      sendBlueSigningSecret: Type.Optional(Type.String()),
    }),
  ),
  inboundUrl: Type.Optional(Type.String()),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

const Params = Type.Object({ channel_id: Id });
/** With appId, the path may name the channel by slug (as response/run does). */
const AppQuery = query({ appId: Type.Optional(AppRef) });

async function appIdOf(ctx: Ctx, org: string, appRef: string | undefined): Promise<string | undefined> {
  return appRef ? (await findApp(ctx.db, org, appRef)).id : undefined;
}

export function channelRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/channel/create',
    {
      schema: {
        tags: ['channels'],
        summary: 'Create an API or iMessage channel. An api channel webhook secret is shown once, in this reply.',
        body: body({
          appId: AppRef,
          slug: Slug,
          type: Type.Enum(['api', 'imessage']),
          name: Type.Optional(Name),
          webhook: Type.Optional(body({ name: Type.Optional(Name), url: OutboundUrl, headers: Type.Optional(HeaderMapInput) })),
          data: Type.Optional(
            body({
              sendBlueAPIKey: Secret,
              sendBlueSecretKey: Secret,
              // E.164, as Sendblue expects it.
              fromNumber: Type.String({ pattern: '^\\+[1-9][0-9]{6,14}$', description: 'E.164 number, e.g. +15551234567.' }),
              sendBlueSigningSecret: Type.Optional(Secret),
            }),
          ),
          returnIfExist: Type.Optional(Type.Boolean()),
        }),
        response: { 200: envelope(ChannelSchema) },
      },
    },
    async (request) => {
      const { channel, created } = await createChannel(ctx, orgOf(request), request.body);
      return { success: true as const, data: channelView(ctx, channel, { webhookSecret: created }) };
    },
  );

  app.get(
    '/v1/channel/list',
    {
      schema: {
        tags: ['channels'],
        summary: 'Return paginated channels for an app.',
        querystring: query({ appId: AppRef, ...PageQuery }),
        response: { 200: envelope(page(ChannelSchema)) },
      },
    },
    async (request) => ({ success: true as const, data: await listChannels(ctx, orgOf(request), request.query) }),
  );

  app.get(
    '/v1/channel/:channel_id',
    {
      schema: {
        tags: ['channels'],
        summary: 'Return one channel by display id, or by slug with appId.',
        params: Params,
        querystring: AppQuery,
        response: { 200: envelope(ChannelSchema) },
      },
    },
    async (request) => {
      const org = orgOf(request);
      const appId = await appIdOf(ctx, org, request.query.appId);
      return { success: true as const, data: channelView(ctx, await findChannel(ctx.db, org, request.params.channel_id, { appId })) };
    },
  );

  app.patch(
    '/v1/channel/:channel_id',
    {
      schema: {
        tags: ['channels'],
        summary: 'Update a channel slug or display name.',
        params: Params,
        querystring: AppQuery,
        body: body({ slug: Type.Optional(Slug), name: Type.Optional(Name) }),
        response: { 200: envelope(ChannelSchema) },
      },
    },
    async (request) => ({
      success: true as const,
      data: channelView(ctx, await updateChannel(ctx, orgOf(request), request.params.channel_id, request.body, request.query.appId)),
    }),
  );

  app.delete(
    '/v1/channel/:channel_id',
    {
      schema: {
        tags: ['channels'],
        summary: 'Delete a channel.',
        params: Params,
        querystring: AppQuery,
        response: { 200: envelope(Type.Object({ id: Type.String(), deleted: Type.Literal(true) })) },
      },
    },
    async (request) => ({ success: true as const, data: await deleteChannel(ctx, orgOf(request), request.params.channel_id, request.query.appId) }),
  );
}
