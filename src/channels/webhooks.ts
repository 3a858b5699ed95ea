import type { Ctx } from '../core/context.js';
import { profileViews } from '../core/profiles.js';
import type { Tx } from '../storage/db.js';
import type { Profile } from '../storage/schema.js';
import { enqueueDelivery } from './deliveries.js';

/**
 * `profile.created` (CONTRACT §4, §7): a profile-created hook, run in the transaction that
 * creates the profile (explicitly or through `response/run`), so the deliveries commit with
 * the profile or not at all. `data` is the profile as `GET /v1/profile/{id}` shows it then.
 */
export async function announceProfileCreated(ctx: Ctx, tx: Tx, profile: Profile): Promise<void> {
  const webhooks = await tx
    .selectFrom('webhooks')
    .select(['id', 'organizationId'])
    .where('appId', '=', profile.appId)
    .where('event', '=', 'profile.created')
    .orderBy('createdAt')
    .execute();
  if (webhooks.length === 0) return;
  // Inside the transaction every read must go through it (PGlite has one connection).
  const [view] = await profileViews({ ...ctx, db: tx }, [profile]);
  for (const w of webhooks) {
    await enqueueDelivery(ctx, tx, { organizationId: w.organizationId, webhookId: w.id, profileId: profile.id, event: 'profile.created', data: view });
  }
}
