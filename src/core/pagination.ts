import type { SelectQueryBuilder } from 'kysely';
import { sql } from 'kysely';
import type { DB } from '../storage/schema.js';

export interface PageParams {
  page?: number;
  pageSize?: number;
}

export interface Page<T> {
  items: T[];
  page: number;
  pageSize: number;
  total: number;
}

/**
 * Runs a filtered query as one page plus the true total. `query` must already carry its
 * WHERE clauses; `order` applies the resource's natural order (ties broken by id).
 */
export async function paginate<TB extends keyof DB, O, T>(
  query: SelectQueryBuilder<DB, TB, O>,
  params: PageParams,
  order: (q: SelectQueryBuilder<DB, TB, O>) => SelectQueryBuilder<DB, TB, O>,
  shape: (row: O) => T,
): Promise<Page<T>> {
  const page = params.page ?? 1;
  const pageSize = params.pageSize ?? 10;
  const [rows, count] = await Promise.all([
    order(query).limit(pageSize).offset((page - 1) * pageSize).execute(),
    query
      .clearSelect()
      .select(sql<number>`count(*)::int`.as('total'))
      .executeTakeFirstOrThrow() as Promise<{ total: number }>,
  ]);
  return { items: rows.map(shape), page, pageSize, total: count.total };
}
