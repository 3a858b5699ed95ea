import { Type, type TSchema } from 'typebox';

// Shared schema pieces. A route states only its own shape; `envelope` adds the wrapper.

export const Slug = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[a-z0-9]+(-[a-z0-9]+)*$',
  description: 'Lowercase a-z, 0-9 and single hyphens, 1-64 characters.',
});
export const Name = Type.String({ minLength: 1, maxLength: 256 });
export const NonEmpty = Type.String({ minLength: 1, maxLength: 4096 });
/** App path/body/query ids accept the display id or the slug. */
export const AppRef = Type.String({ minLength: 1, maxLength: 128, description: 'App display id or slug.' });
export const Id = Type.String({ minLength: 1, maxLength: 128 });
export const Int32 = Type.Integer({ minimum: 0, maximum: 2_147_483_647 });
export const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
export const Timestamp = Type.String({ format: 'date-time' });
export const JsonObject = Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true });

export const PageQuery = {
  // Any page is valid; one past the end is empty (CONTRACT §9).
  page: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, default: 1 })),
  pageSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 10 })),
};

export function body<P extends Parameters<typeof Type.Object>[0]>(properties: P) {
  return Type.Object(properties, { additionalProperties: false });
}

export function query<P extends Parameters<typeof Type.Object>[0]>(properties: P) {
  return Type.Object(properties, { additionalProperties: false });
}

export const IdParam = (name: string) => Type.Object({ [name]: Type.String({ minLength: 1, maxLength: 1100 }) });

export function envelope<T extends TSchema>(data: T) {
  return Type.Object({ success: Type.Literal(true), data });
}

export function page<T extends TSchema>(item: T) {
  return Type.Object({ items: Type.Array(item), page: Type.Integer(), pageSize: Type.Integer(), total: Type.Integer() });
}

export const ErrorEnvelope = Type.Object({
  success: Type.Literal(false),
  error: Type.String(),
  code: Type.Optional(Type.String()),
  details: Type.Optional(Type.Unknown()),
});
