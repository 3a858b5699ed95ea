import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger, FastifyInstance, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify';
import type { Ctx } from '../core/context.js';
import { accessGroupRoutes } from './access-groups.js';
import { appRoutes } from './apps.js';
import { organizationRoutes } from './organizations.js';
import { profileRoutes } from './profiles.js';
import { versionRoutes } from './versions.js';
import { stateRoutes } from './states.js';
import { blobRoutes } from './blobs.js';
import { channelRoutes } from './channels.js';
import { recordRoutes } from './records.js';
import { sessionRoutes } from './sessions.js';
import { webhookRoutes } from './webhooks.js';
import { versionSyncRoutes } from './version-sync.js';
import { responseRoutes } from './responses.js';
import { inboundRoutes } from './inbound.js';
import { installChannelHooks } from '../channels/hooks.js';

export type Api = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>;

/** Every resource's routes. Each file holds one resource's schemas and thin handlers. */
export async function registerRoutes(app: Api, ctx: Ctx): Promise<void> {
  organizationRoutes(app, ctx);
  appRoutes(app, ctx);
  accessGroupRoutes(app, ctx);
  profileRoutes(app, ctx);
  versionRoutes(app, ctx);
  stateRoutes(app, ctx);
  blobRoutes(app, ctx);
  channelRoutes(app, ctx);
  sessionRoutes(app, ctx);
  webhookRoutes(app, ctx);
  recordRoutes(app, ctx);
  versionSyncRoutes(app, ctx);
  responseRoutes(app, ctx);
  inboundRoutes(app, ctx);
  // Profiles are created and instances end in this process too: webhooks, iMessage replies.
  installChannelHooks();
}
