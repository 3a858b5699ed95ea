import { createHash } from 'node:crypto';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsImport from 'ajv-formats';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestServer } from '../helpers/server.js';

/*
 * Every /v1 endpoint, as the server itself publishes it in /openapi.json (so endpoints added
 * later are covered without touching this file), is fed malformed input derived from its own
 * schemas: each answer must be a 4xx error envelope, and no table of the public schema may
 * change. A valid body is synthesized from the schema, then broken one rule at a time, so a
 * mutation that slips through would reach the handler with otherwise valid input.
 */

type Schema = Record<string, any>;
type Path = (string | number)[];
interface Param { name: string; in: string; required?: boolean; schema: Schema }
interface Op { method: string; path: string; body?: Schema; bodyRequired: boolean; params: Param[]; query: Param[]; isPublic: boolean }
interface Case { label: string; url: string; payload?: string | Buffer; contentType?: string; auth?: string | null; expect: number[]; names?: string }

const addFormats = addFormatsImport as unknown as (ajv: Ajv) => Ajv;
const bodyAjv = addFormats(new Ajv({ strict: false, coerceTypes: false }));
const textAjv = addFormats(new Ajv({ strict: false, coerceTypes: true }));
const compiled = new WeakMap<Schema, ValidateFunction>();
const accepts = (schema: Schema, value: unknown, ajv = bodyAjv) => {
  if (!compiled.has(schema)) compiled.set(schema, ajv.compile(schema));
  return compiled.get(schema)!(structuredClone(value)) as boolean;
};

// No maintenance tick during the run: its once-a-day store check claims a setting, which
// would show as a change the malformed request made.
const t = await startTestServer({ config: { maintenanceIntervalSeconds: 3600 } });
afterAll(() => t.close());

// --- The endpoints, from the server's own OpenAPI document -----------------------------
const spec = (await t.server.inject({ method: 'GET', url: '/openapi.json' })).json();
const ops: Op[] = Object.entries(spec.paths as Record<string, Record<string, any>>)
  .filter(([path]) => path.startsWith('/v1/'))
  .flatMap(([path, methods]) =>
    Object.entries(methods)
      .filter(([method]) => ['get', 'post', 'put', 'patch', 'delete'].includes(method))
      .map(([method, op]): Op => {
        const params: Param[] = op.parameters ?? [];
        const json = op.requestBody?.content?.['application/json'];
        return {
          method: method.toUpperCase(),
          path,
          body: json?.schema,
          bodyRequired: Boolean(op.requestBody?.required),
          params: params.filter((p) => p.in === 'path'),
          query: params.filter((p) => p.in === 'query'),
          // A route that checks its own token (inbound webhooks, signed URLs) says `security: []`.
          isPublic: Array.isArray(op.security) && op.security.length === 0,
        };
      }),
  );

// --- A realistic fixture, created through the API, so path ids exist -------------------
const org = await t.org();
async function create(path: string, body: object): Promise<string | undefined> {
  if (!ops.some((o) => o.method === 'POST' && o.path === path)) return undefined; // not written yet
  const res = await t.call('POST', path, { key: org.key, body });
  return res.status === 200 ? res.body.data.id : undefined;
}
const appId = (await create('/v1/app/create', { slug: 'fixture-app', type: 'claude' }))!;
const groupId = (await create('/v1/access_group/create', { appId, name: 'Fixture group', limit: 5, limitReset: 'monthly' }))!;
const versionId = await deploy({ 'CLAUDE.md': 'You are the fixture app.\n' });
const profileId = (await create('/v1/profile/create', { appId, identifier: 'fixture-user', accessGroupId: groupId }))!;
const stateId: string | undefined = (await t.call('GET', `/v1/profile/${profileId}`, { key: org.key })).body.data?.headStateId ?? undefined;
const channelId = await create('/v1/channel/create', { appId, slug: 'fixture-channel', type: 'api' });
const sessionId = await create('/v1/session/create', { appId, type: 'single' });
// Last: a profile created after it would fire a delivery that updates the webhook row.
const webhookId = await create('/v1/webhook/create', { appId, event: 'profile.created', url: 'https://example.com/hook' });

/** A head version (upload → PUT → complete), so endpoints that need one get past that check. */
async function deploy(files: Record<string, string>): Promise<string | undefined> {
  const declared = Object.entries(files).map(([name, text]) => ({ name, hash: `sha256-${createHash('sha256').update(text).digest('hex')}` }));
  const up = await t.call('POST', '/v1/version/upload', { key: org.key, body: { appId, files: declared } });
  if (up.status !== 200) return undefined;
  for (const u of up.body.data.uploadUrls) {
    const url = new URL(u.url);
    if (!u.exists) await t.server.inject({ method: 'PUT', url: url.pathname + url.search, headers: u.headers, payload: files[u.name] });
  }
  const done = await t.call('POST', `/v1/version/upload/${up.body.data.uploadId}/complete`, { key: org.key, body: { appId, versionId: up.body.data.versionId } });
  return done.status === 200 ? done.body.data.id : undefined;
}

const PREFIX: Record<string, string> = {
  organization: 'org', app: 'app', version: 'ver', access_group: 'ag', channel: 'ch', instance: 'inst', session: 'sess',
  profile: 'prof', webhook: 'wh', state: 'state', upload: 'upload', sync: 'sync', conflict: 'conf', history: 'hist',
};
const missingId = (name: string) => `${PREFIX[name.replace(/_id$|Ids?$/, '').replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase()] ?? 'x'}-doesnotexist0000`;
const realIds: Record<string, string | undefined> = {
  organization_id: org.id, app_id: appId, access_group_id: groupId, profile_id: profileId, channel_id: channelId, session_id: sessionId, webhook_id: webhookId,
  version_id: versionId, state_id: stateId,
};
/** A path value that passes the parameter's schema: the fixture's id, else one that does not exist. */
const pathValue = (p: Param) => realIds[p.name] ?? (p.schema.type === 'string' ? missingId(p.name) : String(p.schema.maximum ?? 999_999));

/** Body and query fields that name a record of the caller's organization: unknown → 404. */
const ID_FIELDS = new Set(['appId', 'profileId', 'channelId', 'instanceId', 'accessGroupId', 'toVersionId', 'toStateId', 'webhookId', 'profileIds']);
const FIELD_SAMPLES: Record<string, unknown> = {
  appId, profileId, profileIds: profileId, accessGroupId: groupId, channelId, sessionId, webhookId, id: webhookId,
  toVersionId: versionId, toStateId: stateId, url: 'https://example.com/hook', event: 'profile.created',
};
const STRING_SAMPLES = ['sample-value', '+15551234567', 'https://example.com/x', new Date().toISOString(), `sha256-${'a'.repeat(64)}`, 'a@example.com', 'a'];

// --- Valid values from a schema, then the ways to break them ----------------------------
function sample(schema: Schema, key?: string): unknown {
  if (schema.const !== undefined) return schema.const;
  if (schema.enum) return schema.enum[0];
  const branches = schema.type ? undefined : (schema.anyOf ?? schema.oneOf);
  if (branches) return branches.map((b: Schema) => sample(b, key)).find((v: unknown, i: number) => accepts(branches[i], v));
  switch (Array.isArray(schema.type) ? schema.type[0] : schema.type) {
    case 'object':
      return Object.fromEntries(Object.entries(schema.properties ?? {}).map(([k, s]) => [k, sample(s as Schema, k)]));
    case 'array':
      return Array.from({ length: Math.max(1, schema.minItems ?? 0) }, () => sample(schema.items ?? {}, key));
    case 'integer':
    case 'number':
      return Math.min(Math.max(1, schema.minimum ?? 1), schema.maximum ?? Infinity);
    case 'boolean':
      return false;
    case 'null':
      return null;
    default: {
      const candidates = [FIELD_SAMPLES[key ?? ''], ...STRING_SAMPLES, 'a'.repeat(schema.minLength ?? 1)];
      return candidates.find((c) => typeof c === 'string' && accepts(schema, c));
    }
  }
}

/** Every node of `value` with the schema branch that describes it (root first). */
interface Node { path: Path; schema: Schema; key?: string; value: unknown }
function nodes(schema: Schema, value: unknown, path: Path = [], key?: string): Node[] {
  const branches: Schema[] | undefined = schema.type ? undefined : (schema.anyOf ?? schema.oneOf);
  const s = branches?.find((b) => accepts(b, value)) ?? schema;
  const out: Node[] = [{ path, schema: s, key, value }];
  if (value && typeof value === 'object' && !Array.isArray(value) && s.properties) {
    for (const [k, v] of Object.entries(value)) if (s.properties[k]) out.push(...nodes(s.properties[k], v, [...path, k], k));
  }
  if (Array.isArray(value) && value.length && s.items) out.push(...nodes(s.items, value[0], [...path, 0], key));
  return out;
}

function setAt(root: unknown, path: Path, value: unknown, remove = false): unknown {
  if (path.length === 0) return value;
  const copy = structuredClone(root) as any;
  let cur = copy;
  for (const p of path.slice(0, -1)) cur = cur[p];
  if (remove) delete cur[path.at(-1)!];
  else cur[path.at(-1)!] = value;
  return copy;
}

const WRONG: unknown[] = ['3', true, 123, 1.5, -1, 0, 2 ** 31, ['x'], { a: 1 }, null, '', 'no-such-value'];
const UNICODE = { emoji: 'x-😀', rtl: 'שלום-עולם', nul: 'a\u0000b' };
/** Not Unicode text, so PostgreSQL cannot store it; JSON can carry it (`"\ud800"`), a URL cannot. */
const LONE_SURROGATE = 'a\ud800b';
/** An object nested `depth` levels deep, as JSON (built without recursion). */
const nested = (depth: number) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
const short = (v: unknown) => (JSON.stringify(v) ?? String(v)).slice(0, 40);
const where = (path: Path) => ['body', ...path].join('.');
let hugeBody: Buffer | undefined;

function bodyCases(op: Op, url: string): Case[] {
  const json = (label: string, value: unknown, expect: number[], names?: string): Case => ({ label, url, payload: JSON.stringify(value), expect, names });
  const cases: Case[] = [
    { label: 'invalid JSON', url, payload: '{"a": 1,', expect: [400] },
    { label: 'JSON with trailing garbage', url, payload: '{} x', expect: [400] },
    // A body that is not a JSON object is a 400 (CONTRACT §1, §9), whatever its media type.
    { label: 'text/plain body', url, payload: 'hello', contentType: 'text/plain', expect: [400] },
    { label: 'XML body', url, payload: '<a/>', contentType: 'application/xml', expect: [400] },
    { label: 'form-encoded body', url, payload: 'slug=a&type=claude', contentType: 'application/x-www-form-urlencoded', expect: [400] },
    { label: 'body over 32 MiB', url, payload: (hugeBody ??= Buffer.from(`{"x":"${'a'.repeat(33 * 2 ** 20)}"}`)), expect: [413] },
  ];
  if (!op.body) {
    // No documented body fields: no body or {} only, never a body silently ignored.
    cases.push(json('an undocumented body field', { unexpectedField: 1 }, [400], 'unexpectedField'), json('body = null', null, [400]));
    return cases;
  }
  const schema = op.body;
  const base = sample(schema);
  if (!accepts(schema, base)) return [{ label: `cannot synthesize a valid body from the schema (${short(base)})`, url, expect: [] }];
  if (op.bodyRequired) cases.push({ label: 'no body', url, expect: [400] }, { label: 'empty JSON body', url, payload: '', expect: [400] });
  for (const v of [[], ['x'], 'text', 42, null, true]) if (!accepts(schema, v)) cases.push(json(`body = ${short(v)}`, v, [400]));
  for (const n of nodes(schema, base)) {
    const s = n.schema;
    const send = (label: string, value: unknown, expect: number[]) => cases.push(json(`${where(n.path)} = ${label}`, setAt(base, n.path, value), expect));
    // Only what the published schema itself rejects must be a 400.
    const invalid = (label: string, value: unknown) => accepts(schema, setAt(base, n.path, value)) || send(label, value, [400]);
    if (s.type === 'object' && s.properties) {
      for (const req of s.required ?? []) cases.push(json(`${where([...n.path, req])} missing`, setAt(base, [...n.path, req], undefined, true), [400], req));
      // `anyOf: [{required: [a]}, {required: [b]}]`: one of them must be there.
      const either: string[] = (s.anyOf ?? []).flatMap((b: Schema) => b.required ?? []);
      if (either.length) cases.push(json(`${where([...n.path, either.join('/')])} all missing`, either.reduce((b, k) => setAt(b, [...n.path, k], undefined, true), base as unknown), [400]));
      if (s.additionalProperties === false) {
        cases.push(json(`${where(n.path)} with an unknown field`, setAt(base, [...n.path, 'unexpectedField'], 1), [400], 'unexpectedField'));
      }
    }
    if (s.type === 'object' && !s.properties && s.additionalProperties !== false && n.path.length) {
      // Free-form JSON is stored as jsonb, which cannot hold NUL or a lone surrogate, nor
      // nest without end: refuse it rather than fail.
      send('an object holding NUL', { note: UNICODE.nul }, [400]);
      send('an object holding a lone surrogate', { note: LONE_SURROGATE }, [400]);
      send('an object with a lone surrogate in a key', { [LONE_SURROGATE]: 1 }, [400]);
      const deep = JSON.stringify(setAt(base, n.path, 'DEEP')).replace('"DEEP"', nested(5000));
      cases.push({ label: `${where(n.path)} = an object nested 5,000 levels deep`, url, payload: deep, expect: [400] });
    }
    if (n.path.length === 0) continue;
    for (const v of WRONG) invalid(short(v), v);
    if (s.maxLength) invalid(`${s.maxLength + 1} characters`, 'a'.repeat(s.maxLength + 1));
    if (s.maxItems) invalid(`${s.maxItems + 1} items`, Array(s.maxItems + 1).fill(n.value));
    if (ID_FIELDS.has(n.key ?? '') && s.type === 'string') {
      // On the required fields alone, so that no other field (an alias, say) is judged first.
      const minimal = Object.fromEntries((schema.required ?? []).map((k: string) => [k, (base as any)[k]]));
      const body = setAt(n.path.length === 1 ? minimal : base, n.path, missingId(n.key!));
      cases.push(json(`${where(n.path)} = an unknown id`, accepts(schema, body) ? body : setAt(base, n.path, missingId(n.key!)), [404]));
    }
    if (s.type === 'string') {
      for (const [name, v] of Object.entries({ ...UNICODE, 'lone surrogate': LONE_SURROGATE })) {
        if (!accepts(schema, setAt(base, n.path, v))) send(name, v, [400]);
        else if (ID_FIELDS.has(n.key ?? '')) send(name, v, [400, 404]);
        // PostgreSQL text cannot hold these: refused, never stored altered or a 500.
        else if (name === 'nul' || v === LONE_SURROGATE) send(name, v, [400]);
      }
    }
  }
  return cases;
}

function queryCases(op: Op, path: string, payload: string | undefined): Case[] {
  // An endpoint that documents no query parameters takes none (a public one checks its own).
  if (op.query.length === 0) return op.isPublic ? [] : [{ label: 'a query parameter where none is documented', url: `${path}?unexpectedParam=1`, payload, expect: [400], names: 'unexpectedParam' }];
  const schema = {
    type: 'object',
    properties: Object.fromEntries(op.query.map((p) => [p.name, p.schema])),
    required: op.query.filter((p) => p.required).map((p) => p.name),
  };
  const base: Record<string, string | string[]> = {};
  for (const p of op.query) if (p.required) base[p.name] = String(sample(p.schema, p.name));
  const url = (q: Record<string, string | string[] | undefined>) => {
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) for (const one of v === undefined ? [] : [v].flat()) search.append(k, one);
    return `${path}?${search}`;
  };
  const cases: Case[] = [{ label: 'unknown query parameter', url: url({ ...base, unexpectedParam: '1' }), payload, expect: [400], names: 'unexpectedParam' }];
  for (const p of op.query) {
    const at = (label: string, v: string | string[], expect: number[], names?: string) =>
      cases.push({ label: `query ${p.name} = ${label}`, url: url({ ...base, [p.name]: v }), payload, expect, names });
    if (p.required) cases.push({ label: `query ${p.name} missing`, url: url({ ...base, [p.name]: undefined }), payload, expect: [400], names: p.name });
    const fixed: Record<string, string[]> = { page: ['-1', '0', '1.5', 'abc', '', '1e1', '0x10'], pageSize: ['-1', '0', '1.5', '101', 'abc', '', '1e1', '0x10'] };
    if (fixed[p.name]) {
      // The contract fixes these: never clamped, always a 400.
      for (const v of fixed[p.name]) at(JSON.stringify(v), v, [400]);
    } else {
      const candidates = ['', 'no-such-value', '1.5', '-1', 'abc', 'a'.repeat((p.schema.maxLength ?? 4096) + 1)];
      for (const v of candidates) if (!accepts(schema, { ...base, [p.name]: v }, textAjv)) at(short(v), v, [400]);
    }
    const one = base[p.name] ?? String(sample(p.schema, p.name));
    at('repeated', [String(one), String(one)], [400]);
    if (p.schema.type === 'string') {
      if (ID_FIELDS.has(p.name)) at('an unknown id', missingId(p.name), [404]);
      for (const [name, v] of Object.entries(UNICODE)) {
        if (!accepts(schema, { ...base, [p.name]: v }, textAjv)) at(name, v, [400]);
        else if (ID_FIELDS.has(p.name)) at(name, v, [400, 404]);
        else if (name === 'nul') at(name, v, [400]);
      }
    }
  }
  return cases;
}

function pathCases(op: Op, query: string, payload: string | undefined): Case[] {
  const url = (over: Record<string, string>) =>
    op.path.replace(/\{(\w+)\}/g, (_, n: string) => over[n] ?? encodeURIComponent(pathValue(op.params.find((p) => p.name === n)!))) + query;
  return op.params.flatMap((p) => [
    { label: `path ${p.name} that does not exist`, url: url({ [p.name]: p.schema.type === 'string' ? missingId(p.name) : String(p.schema.maximum ?? 999_999) }), payload, expect: [404] },
    ...Object.entries({ ...UNICODE, '2000 characters': 'a'.repeat(2000) }).map(([name, v]) => ({
      label: `path ${p.name} = ${name}`, url: url({ [p.name]: encodeURIComponent(v) }), payload, expect: [400, 404],
    })),
    { label: `path ${p.name} of 5000 characters`, url: url({ [p.name]: 'a'.repeat(5000) }), payload, expect: [400, 414] },
    { label: `path ${p.name} badly percent-encoded`, url: url({ [p.name]: 'a%E0%A4%A' }), payload, expect: [400] },
  ]);
}

function authCases(op: Op, url: string): Case[] {
  if (op.isPublic) return [];
  const userOnly = op.path.startsWith('/v1/organization/');
  return [
    { label: 'no key', url, auth: null, expect: [401] },
    { label: 'malformed key', url, auth: 'Bearer not-a-key', expect: [401] },
    { label: 'not a bearer token', url, auth: `Basic ${Buffer.from('a:b').toString('base64')}`, expect: [401] },
    { label: 'unknown key', url, auth: `Bearer dk-${'Z'.repeat(40)}`, expect: [401] },
    { label: userOnly ? 'organization key' : 'user key', url, auth: `Bearer ${userOnly ? org.key : t.userKey}`, expect: [403] },
  ];
}

// --- Running the cases: 4xx envelope, and nothing changed ------------------------------
const tables = (
  await sql<{ name: string }>`select table_name as name from information_schema.tables
    where table_schema = 'public' and table_type = 'BASE TABLE' and table_name <> 'idempotency_keys' order by 1`.execute(t.ctx.db)
).rows.map((r) => r.name);
const snapshotQuery = sql.raw(
  `select ${tables.map((n) => `(select count(*) || ':' || md5(coalesce(string_agg(r::text, '|' order by r::text), '')) from "${n}" r) as "${n}"`).join(', ')}`,
);
async function snapshot(): Promise<Record<string, string>> {
  return (await snapshotQuery.execute(t.ctx.db)).rows[0] as Record<string, string>;
}

async function run(op: Op, cases: Case[]): Promise<string[]> {
  const key = op.path.startsWith('/v1/organization/') ? t.userKey : org.key;
  const failures: string[] = [];
  let before = await snapshot();
  for (const c of cases) {
    // A route that checks its own token or signature may refuse first what it cannot verify (403, 404).
    const expected = op.isPublic ? [...new Set([...c.expect, 403, 404])] : c.expect;
    const auth = c.auth === undefined ? `Bearer ${key}` : c.auth;
    const res = await t.server.inject({
      method: op.method as 'POST',
      url: c.url,
      headers: { ...(auth ? { authorization: auth } : {}), ...(c.payload !== undefined ? { 'content-type': c.contentType ?? 'application/json' } : {}) },
      ...(c.payload !== undefined ? { payload: c.payload } : {}),
    });
    const problems: string[] = [];
    let reply: any;
    try {
      reply = res.json();
    } catch {
      problems.push('reply is not JSON');
    }
    if (!expected.includes(res.statusCode)) problems.push(`status ${res.statusCode}, expected ${expected.join(' or ') || 'a valid case'}`);
    if (reply?.success !== false || typeof reply?.error !== 'string' || reply.error === '') problems.push('not an error envelope');
    else if (c.names && res.statusCode === 400 && !reply.error.includes(c.names)) problems.push(`error does not name "${c.names}"`);
    const after = await snapshot();
    const changed = tables.filter((n) => before[n] !== after[n]);
    if (changed.length) problems.push(`changed ${changed.join(', ')}`);
    before = after;
    if (problems.length) failures.push(`${op.method} ${c.url.slice(0, 120)} [${c.label}]: ${problems.join('; ')} — ${res.body.slice(0, 160)}`);
  }
  return failures;
}

describe('malformed input to every /v1 endpoint', () => {
  it('finds the endpoints in /openapi.json', () => {
    const found = ops.map((o) => `${o.method} ${o.path}`);
    for (const resource of ['app', 'access_group', 'profile']) {
      for (const route of ['POST /create', 'GET /list', 'GET /{id}', 'PATCH /{id}', 'DELETE /{id}']) {
        const [method, rest] = route.split(' ');
        const id = resource === 'app' ? 'app_id' : `${resource}_id`;
        expect(found).toContain(`${method} /v1/${resource}${rest.replace('{id}', `{${id}}`)}`);
      }
    }
    expect(found).toEqual(expect.arrayContaining(['POST /v1/organization/create', 'PATCH /v1/organization/{organization_id}']));
  });

  it('builds its fixture through the API, so path ids exist', () => {
    const has = (path: string) => ops.some((o) => o.path === path);
    const fixture = { appId, groupId, profileId, versionId, stateId, channelId, sessionId, webhookId };
    const expected = {
      appId: true, groupId: true, profileId: true, versionId: has('/v1/version/upload'), stateId: has('/v1/version/upload'),
      channelId: has('/v1/channel/create'), sessionId: has('/v1/session/create'), webhookId: has('/v1/webhook/create'),
    };
    expect(Object.fromEntries(Object.entries(fixture).map(([k, v]) => [k, v !== undefined]))).toEqual(expected);
  });

  for (const op of ops) {
    it(`${op.method} ${op.path}`, async () => {
      const basePath = op.path.replace(/\{(\w+)\}/g, (_, n: string) => encodeURIComponent(pathValue(op.params.find((p) => p.name === n)!)));
      const requiredQuery = new URLSearchParams(
        op.query.filter((p) => p.required).map((p): [string, string] => [p.name, String(sample(p.schema, p.name))]),
      ).toString();
      // Query and path cases carry a valid body, so only the part under test is wrong.
      const payload = op.body && ['POST', 'PUT', 'PATCH'].includes(op.method) ? JSON.stringify(sample(op.body)) : undefined;
      const url = requiredQuery ? `${basePath}?${requiredQuery}` : basePath;
      const cases = [
        ...authCases(op, url),
        ...(['POST', 'PUT', 'PATCH', 'DELETE'].includes(op.method) ? bodyCases(op, url) : []),
        ...queryCases(op, basePath, payload),
        ...pathCases(op, requiredQuery ? `?${requiredQuery}` : '', payload),
      ];
      expect(cases.length).toBeGreaterThan(0);
      const failures = await run(op, cases);
      expect(failures, `${failures.length} of ${cases.length} cases failed:\n${failures.join('\n')}`).toEqual([]);
    });
  }
});
