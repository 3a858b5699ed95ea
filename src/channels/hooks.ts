import { profileCreatedHooks } from '../core/profiles.js';
import { instanceEndedHooks } from '../core/runs.js';
import { onInstanceEnded } from './instance-webhook.js';
import { onSendblueInstanceEnded } from './sendblue.js';
import { announceProfileCreated } from './webhooks.js';

/**
 * Where channels hook into the domain. Both registries run their hooks inside the writing
 * transaction: `profileCreatedHooks` in the one that creates a profile (API: profile/create,
 * response/run; worker: the iMessage inbound job), `instanceEndedHooks` in an instance's final
 * transaction (`finalizeInstance`: the runner, the reaper, and `response/stop` of a queued
 * instance). Every process role installs them (API routes and workers both call this).
 */
export { instanceEndedHooks, profileCreatedHooks };

let installed = false;

export function installChannelHooks(): void {
  if (installed) return;
  installed = true;
  profileCreatedHooks.push(announceProfileCreated);
  instanceEndedHooks.push(onInstanceEnded, onSendblueInstanceEnded);
}
