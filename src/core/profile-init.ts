import { sql } from 'kysely';
import type { Ctx } from './context.js';
import { newId } from './ids.js';
import { EMPTY_HASH } from './trees.js';
import type { Tx } from '../storage/db.js';

/**
 * Gives a new profile its first state (the app head version's tree, `source: init`) in the
 * transaction that creates the profile. Returns the new head, or null when the app has no
 * head version yet (the profile then gets its first state with the first version).
 * The state is the version plus the empty overlay: no file is copied.
 */
export async function createInitialState(
  ctx: Ctx,
  tx: Tx,
  profile: { id: string; organizationId: string; appId: string },
  headVersionId: string | null,
): Promise<{ headStateId: string; baseVersionId: string } | null> {
  if (!headVersionId) return null;
  const version = await tx
    .selectFrom('versions')
    .select(['treeHash', 'fileCount', 'size'])
    .where('organizationId', '=', profile.organizationId)
    .where('id', '=', headVersionId)
    .executeTakeFirstOrThrow();
  const id = newId('state');
  await tx
    .insertInto('states')
    .values({
      organizationId: profile.organizationId,
      id,
      profileId: profile.id,
      appId: profile.appId,
      number: 1,
      parentStateId: null,
      baseVersionId: headVersionId,
      overlayHash: EMPTY_HASH,
      treeHash: version.treeHash,
      fileCount: version.fileCount,
      size: version.size,
      source: 'init',
      status: 'ready',
      error: null,
      sandboxId: null,
      createdAt: ctx.now(),
    })
    .execute();
  return { headStateId: id, baseVersionId: headVersionId };
}

/**
 * When an app registers a version, every active profile still without a head state gets
 * its first state from it: one set-based statement, whatever the number of profiles.
 * Runs in the registering transaction, which holds the app row lock (as profile creation
 * does), so no profile is missed or initialized twice.
 */
export async function initProfilesForVersion(
  ctx: Ctx,
  tx: Tx,
  v: { organizationId: string; appId: string; id: string; treeHash: string; fileCount: number; size: number },
): Promise<number> {
  const result = await sql`
    with targets as (
      select p.id, p.organization_id,
             coalesce((select max(s.number) from states s where s.profile_id = p.id), 0) + 1 as number
        from profiles p
       where p.app_id = ${v.appId} and p.status = 'active' and p.head_state_id is null
         for update of p
    ), created as (
      insert into states (organization_id, id, profile_id, app_id, number, parent_state_id, base_version_id,
                          overlay_hash, tree_hash, file_count, size, source, status, created_at)
      select t.organization_id,
             -- display ids as newId makes them: prefix + 16 base62 characters
             'state-' || substr(translate(encode(sha256(convert_to(gen_random_uuid()::text || t.id, 'UTF8')), 'base64'), '+/=', ''), 1, 16),
             t.id, ${v.appId}, t.number, null, ${v.id}, ${EMPTY_HASH}, ${v.treeHash}, ${v.fileCount}, ${v.size}, 'init', 'ready', ${ctx.now()}
        from targets t
      returning profile_id, id
    )
    update profiles p
       set head_state_id = c.id, base_version_id = ${v.id}, head_seq = p.head_seq + 1, updated_at = ${ctx.now()}
      from created c
     where p.id = c.profile_id
  `.execute(tx);
  return Number(result.numAffectedRows ?? 0);
}
