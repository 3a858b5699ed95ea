import type { Ctx } from '../core/context.js';
import { instanceView } from '../core/records.js';
import type { Tx } from '../storage/db.js';
import type { Instance } from '../storage/schema.js';
import { enqueueDelivery } from './deliveries.js';

const EVENTS: Record<string, string> = {
  completed: 'response.completed',
  failed: 'response.failed',
  stopped: 'response.stopped',
};

/**
 * An `api` channel's webhook (CONTRACT §9): one signed POST per ended instance, queued in the
 * instance's final transaction (an instance-ended hook), delivered and retried like every
 * webhook, signed with the channel webhook's own secret.
 */
export async function onInstanceEnded(ctx: Ctx, tx: Tx, instance: Instance): Promise<void> {
  const event = EVENTS[instance.status];
  if (!instance.channelId || !event) return;
  const channel = await tx.selectFrom('channels').select(['id', 'organizationId', 'type', 'webhook']).where('id', '=', instance.channelId).executeTakeFirst();
  if (!channel || channel.type !== 'api' || !channel.webhook) return;
  await enqueueDelivery(ctx, tx, { organizationId: channel.organizationId, channelId: channel.id, profileId: instance.profileId, event, data: instanceView(instance) });
}
