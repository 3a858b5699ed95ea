import { Ajv, type ErrorObject } from 'ajv';
import addFormatsImport from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';

// ajv-formats ships CJS with a default export; under NodeNext it arrives wrapped.
const addFormats = addFormatsImport as unknown as (ajv: Ajv) => Ajv;

function makeAjv(coerceTypes: boolean): Ajv {
  const ajv = new Ajv({ coerceTypes, removeAdditional: false, useDefaults: true, allErrors: false, strict: false });
  addFormats(ajv);
  return ajv;
}

// Bodies are never coerced ("3" is not 3). Query strings and path params are text on the
// wire, so they are coerced, and then checked as strictly as a body.
const bodyAjv = makeAjv(false);
const textAjv = makeAjv(true);

/** How deep a body may nest objects and arrays (PostgreSQL's jsonb and our checks recurse). */
const MAX_BODY_DEPTH = 100;

/** A lone UTF-16 surrogate (`"\ud800"` in JSON): not Unicode text, which jsonb refuses. */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * The first string or key a database could not store as text, with its path (`/a/0/b`): one
 * holding NUL (PostgreSQL text and jsonb cannot) or a lone surrogate (not valid Unicode); or a
 * value nested deeper than MAX_BODY_DEPTH. Walks without recursion: any depth is reported, not
 * a stack overflow.
 */
function findUnstorable(root: unknown): { path: string; message: string } | undefined {
  const textProblem = (text: string) =>
    text.includes('\0') ? 'must not contain the NUL character (\\u0000)' : LONE_SURROGATE.test(text) ? 'must be valid Unicode text (it holds a lone UTF-16 surrogate such as \\ud800)' : undefined;
  const stack: { value: unknown; path: string; depth: number }[] = [{ value: root, path: '', depth: 0 }];
  for (let item = stack.pop(); item; item = stack.pop()) {
    const { value, path, depth } = item;
    if (typeof value === 'string') {
      const message = textProblem(value);
      if (message) return { path, message };
      continue;
    }
    if (value === null || typeof value !== 'object') continue;
    if (depth >= MAX_BODY_DEPTH) return { path, message: `must not nest objects or arrays more than ${MAX_BODY_DEPTH} levels deep` };
    const entries = Object.entries(value);
    for (let i = entries.length - 1; i >= 0; i--) {
      const [key, v] = entries[i];
      const message = textProblem(key);
      if (message) return { path: `${path}/${key}`, message: `the property name ${message}` };
      stack.push({ value: v, path: `${path}/${key}`, depth: depth + 1 });
    }
  }
  return undefined;
}

/** The integer properties of a query string or path schema. */
function integerFields(schema: unknown): string[] {
  const properties = (schema as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
  return Object.keys(properties).filter((name) => properties[name].type === 'integer');
}

/**
 * The first of `fields` whose text is not a plain decimal integer. Coercion alone would read
 * `1e1` as 10 and `0x10` as 16; a query string's numbers are digits, with an optional sign.
 */
function notDecimalInteger(data: unknown, fields: string[]): string | undefined {
  if (fields.length === 0 || data === null || typeof data !== 'object') return undefined;
  const values = data as Record<string, unknown>;
  return fields.find((name) => typeof values[name] === 'string' && !/^-?[0-9]+$/.test(values[name]));
}

export const validatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const ajv = httpPart === 'body' ? bodyAjv : textAjv;
  const validate = ajv.compile(schema as object);
  const integers = httpPart === 'body' ? [] : integerFields(schema);
  // Text the database cannot store would pass the schema and then fail there as a 500: refuse it here.
  const check = (data: unknown, dataCtx?: Parameters<typeof validate>[1]) => {
    const notDecimal = notDecimalInteger(data, integers);
    if (notDecimal) {
      check.errors = [{ keyword: 'type', instancePath: `/${notDecimal}`, schemaPath: '#', params: {}, message: 'must be an integer written in decimal digits' }];
      return false;
    }
    const ok = validate(data, dataCtx);
    const bad = ok ? findUnstorable(data) : undefined;
    check.errors = bad === undefined ? validate.errors : [{ keyword: 'unstorable', instancePath: bad.path, schemaPath: '#', params: {}, message: bad.message }];
    return ok && bad === undefined;
  };
  check.errors = null as ErrorObject[] | null | undefined;
  // Fastify passes the parent (so Ajv may replace a root value) only when it sees schemaEnv.
  return Object.assign(check, { schemaEnv: validate.schemaEnv }) as unknown as ReturnType<FastifySchemaCompiler<unknown>>;
};

/** One readable sentence per failed rule, e.g. `body.slug must match pattern ...`. */
export function describeValidation(errors: ErrorObject[], context: string): { message: string; details: unknown[] } {
  const details = errors.map((e) => {
    const where = `${context}${e.instancePath.replace(/\//g, '.')}`;
    if (e.keyword === 'additionalProperty' || e.keyword === 'additionalProperties') {
      const prop = (e.params as { additionalProperty: string }).additionalProperty;
      return { field: `${where}.${prop}`, message: `unknown property "${prop}" is not allowed` };
    }
    if (e.keyword === 'required') {
      const prop = (e.params as { missingProperty: string }).missingProperty;
      return { field: `${where}.${prop}`, message: `"${prop}" is required` };
    }
    if (e.keyword === 'enum') {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues;
      return { field: where, message: `must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}` };
    }
    return { field: where, message: e.message ?? 'is invalid' };
  });
  const first = details[0];
  return { message: first ? `${first.field}: ${first.message}` : `invalid ${context}`, details };
}
