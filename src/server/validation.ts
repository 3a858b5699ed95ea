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

/** The path (`/a/0/b`) of the first string or key holding NUL, which PostgreSQL text and jsonb cannot store. */
function findNul(value: unknown, path = ''): string | undefined {
  if (typeof value === 'string') return value.includes('\0') ? path : undefined;
  if (value === null || typeof value !== 'object') return undefined;
  for (const [key, v] of Object.entries(value)) {
    const at = key.includes('\0') ? `${path}/${key}` : findNul(v, `${path}/${key}`);
    if (at !== undefined) return at;
  }
  return undefined;
}

export const validatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const ajv = httpPart === 'body' ? bodyAjv : textAjv;
  const validate = ajv.compile(schema as object);
  // A NUL would pass the schema and then fail in the database as a 500: refuse it here.
  const check = (data: unknown, dataCtx?: Parameters<typeof validate>[1]) => {
    const ok = validate(data, dataCtx);
    const nul = ok ? findNul(data) : undefined;
    check.errors = nul === undefined ? validate.errors : [{ keyword: 'nul', instancePath: nul, schemaPath: '#', params: {}, message: 'must not contain the NUL character (\\u0000)' }];
    return ok && nul === undefined;
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
