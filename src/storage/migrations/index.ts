import type { Migration, MigrationProvider } from 'kysely';
import * as m001 from './001_foundation.js';
import * as m002 from './002_files.js';
import * as m003 from './003_sync.js';
import * as m004 from './004_responses.js';
import * as m005 from './005_deliveries.js';
import * as m006 from './006_apps_notify.js';
import * as m007 from './007_profiles_fillfactor.js';
import * as m008 from './008_profile_records.js';
import * as m009 from './009_delivery_retention.js';
import * as m010 from './010_upload_ids.js';
import * as m011 from './011_carried_inputs.js';

// Ordered by name; add a file and a line here, never edit a migration that has shipped.
const MIGRATIONS: Record<string, Migration> = {
  '001_foundation': m001,
  '002_files': m002,
  '003_sync': m003,
  '004_responses': m004,
  '005_deliveries': m005,
  '006_apps_notify': m006,
  '007_profiles_fillfactor': m007,
  '008_profile_records': m008,
  '009_delivery_retention': m009,
  '010_upload_ids': m010,
  '011_carried_inputs': m011,
};

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return MIGRATIONS;
  },
};
