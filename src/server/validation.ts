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

export const validatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const ajv = httpPart === 'body' ? bodyAjv : textAjv;
  return ajv.compile(schema as object) as ReturnType<FastifySchemaCompiler<unknown>>;
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
