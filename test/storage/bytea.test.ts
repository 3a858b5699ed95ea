import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../src/storage/db.js';
import { cloneTemplate, type TestDatabase } from '../helpers/databases.js';

// Inline blob contents (`blobs.data`) go through the database driver's bytea codec, both ways.

let testDb: TestDatabase;
let database: Database;

beforeAll(async () => {
  testDb = await cloneTemplate();
  database = await openDatabase({ databaseUrl: testDb.databaseUrl, dataDir: testDb.databaseUrl ? undefined : `${testDb.dataDir}/db` });
});

afterAll(async () => {
  await database.close();
  await testDb.drop();
});

describe('bytea round trip', () => {
  const cases: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['every byte value', Buffer.from(Array.from({ length: 256 }, (_, i) => i))],
    ['64 KiB of random bytes', randomBytes(64 * 1024)],
    ['a view into a larger buffer', randomBytes(300).subarray(17, 217)],
  ];
  for (const [name, bytes] of cases) {
    it(`keeps ${name} byte for byte`, async () => {
      const hash = randomBytes(32).toString('hex');
      await database.db.insertInto('blobs').values({ hash, size: bytes.length, data: bytes }).execute();
      const row = await database.db.selectFrom('blobs').select(['data', 'size']).where('hash', '=', hash).executeTakeFirstOrThrow();
      expect(Buffer.from(row.data!).equals(bytes)).toBe(true);
      expect(Number(row.size)).toBe(bytes.length);
    });
  }

  it('keeps 8 MiB of inline contents in one statement', async () => {
    const rows = Array.from({ length: 128 }, () => ({ hash: randomBytes(32).toString('hex'), size: 64 * 1024, data: randomBytes(64 * 1024) }));
    await database.db.insertInto('blobs').values(rows).execute();
    const back = await database.db.selectFrom('blobs').select(['hash', 'data']).where('hash', 'in', rows.map((r) => r.hash)).execute();
    const byHash = new Map(back.map((r) => [r.hash, Buffer.from(r.data!)]));
    for (const r of rows) expect(byHash.get(r.hash)!.equals(r.data)).toBe(true);
  });
});
