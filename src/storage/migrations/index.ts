import type { Migration, MigrationProvider } from 'kysely';
import * as m001 from './001_foundation.js';

// Ordered by name; add a file and a line here, never edit a migration that has shipped.
const MIGRATIONS: Record<string, Migration> = {
  '001_foundation': m001,
};

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return MIGRATIONS;
  },
};
