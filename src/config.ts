import { isIPv6 } from 'node:net';
import path from 'node:path';

/** Everything the server reads from its environment, validated once at start-up. */
export interface Config {
  port: number;
  host: string;
  dataDir: string;
  /** `postgres://...` to use PostgreSQL; undefined means embedded PGlite under dataDir. */
  databaseUrl: string | undefined;
  /** `file:<dir>` or `s3://bucket/prefix`. */
  storage: string;
  s3: { endpoint: string | undefined; region: string | undefined };
  /** With S3: how much of what it read a worker keeps on its disk (0: nothing). */
  blobCacheBytes: number;
  publicUrl: string;
  userKey: string | undefined;
  /** Undefined: generated on first start and kept in the database. */
  secret: string | undefined;
  anthropicBaseUrl: string | undefined;
  anthropicApiKey: string | undefined;
  sendblueApiBaseUrl: string;
  allowPrivateUrls: boolean;
  maxBodyBytes: number;
  maxBundleBytes: number;
  logLevel: string;
  /** Seconds a background job may run before it is taken for dead and retried. */
  jobLeaseSeconds: number;
  /** How often the queue looks for expired jobs. */
  maintenanceIntervalSeconds: number;
  /** Agent turns this process runs at once (0: it runs none, e.g. an API-only process). */
  runConcurrency: number;
  /** A running instance's lease: a worker silent for this long is taken for dead. */
  runLeaseSeconds: number;
  /** A turn that takes longer ends `failed` (code `timeout`). */
  runTimeoutSeconds: number;
  /** The model `claude` runs use; unset: Claude Code's default. */
  claudeModel: string | undefined;
  /** The model `openclaw` runs use (an Anthropic model id); unset: openclaw-config.ts's default. */
  openclawModel: string | undefined;
  /** OpenClaw gateways this process runs at once (each idles at ~1.2 GB). */
  openclawMaxGateways: number;
  /** A gateway with no turn for this long is stopped. */
  openclawIdleSeconds: number;
  /** Outbound deliveries (webhooks, Sendblue replies): retry n waits base·2^(n−1), capped at 1 h. */
  webhookRetryBaseMs: number;
  /** ...and retries stop once this long has passed since the first attempt. */
  webhookRetryWindowMs: number;
}

export class ConfigError extends Error {}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

/** pino's levels: the server log shows this level and above. */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * `http://HOST:PORT`, the default base of signed and inbound URLs and what `serve` prints; an
 * IPv6 address in brackets, as a URL needs it. With PORT 0 the server sets the port it got.
 */
export function defaultPublicUrl(host: string, port: number): string {
  return `http://${isIPv6(host) ? `[${host}]` : host}:${port}`;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const port = overrides.port ?? int(env, 'PORT', 8787);
  const host = overrides.host ?? (env.HOST || '127.0.0.1');
  const dataDir = path.resolve(overrides.dataDir ?? (env.HARNESSLAYER_DATA_DIR || './.harnesslayer'));
  const databaseUrl = overrides.databaseUrl ?? (env.DATABASE_URL || undefined);
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError(`DATABASE_URL must start with postgres:// (got "${databaseUrl}")`);
  }
  const storage = overrides.storage ?? (env.HARNESSLAYER_STORAGE || `file:${path.join(dataDir, 'blobs')}`);
  if ((!storage.startsWith('file:') && !storage.startsWith('s3://')) || /^s3:\/\/(\/|$)/.test(storage)) {
    throw new ConfigError(`HARNESSLAYER_STORAGE must be file:<dir> or s3://bucket/prefix (got "${storage}")`);
  }
  const logLevel = overrides.logLevel ?? (env.LOG_LEVEL || 'info');
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')} (got "${logLevel}")`);
  const allow = env.HARNESSLAYER_ALLOW_PRIVATE_URLS ?? '0';
  return {
    port,
    host,
    dataDir,
    databaseUrl,
    storage,
    s3: { endpoint: env.S3_ENDPOINT || undefined, region: env.S3_REGION || undefined },
    publicUrl: (overrides.publicUrl ?? (env.HARNESSLAYER_PUBLIC_URL || defaultPublicUrl(host, port))).replace(/\/+$/, ''),
    userKey: overrides.userKey ?? (env.HARNESSLAYER_USER_KEY || undefined),
    secret: overrides.secret ?? (env.HARNESSLAYER_SECRET || undefined),
    anthropicBaseUrl: overrides.anthropicBaseUrl ?? (env.ANTHROPIC_BASE_URL || undefined),
    anthropicApiKey: overrides.anthropicApiKey ?? (env.ANTHROPIC_API_KEY || undefined),
    sendblueApiBaseUrl: (overrides.sendblueApiBaseUrl ?? (env.SENDBLUE_API_BASE_URL || 'https://api.sendblue.co')).replace(/\/+$/, ''),
    allowPrivateUrls: overrides.allowPrivateUrls ?? (allow === '1' || allow === 'true'),
    maxBodyBytes: overrides.maxBodyBytes ?? int(env, 'HARNESSLAYER_MAX_BODY_BYTES', 32 * 1024 * 1024),
    maxBundleBytes: overrides.maxBundleBytes ?? int(env, 'HARNESSLAYER_MAX_BUNDLE_BYTES', 1024 * 1024 * 1024),
    blobCacheBytes: overrides.blobCacheBytes ?? int(env, 'HARNESSLAYER_BLOB_CACHE_MB', 1024) * 1024 * 1024,
    logLevel,
    jobLeaseSeconds: overrides.jobLeaseSeconds ?? Math.max(1, int(env, 'HARNESSLAYER_JOB_LEASE_SECONDS', 300)),
    maintenanceIntervalSeconds: overrides.maintenanceIntervalSeconds ?? Math.max(1, int(env, 'HARNESSLAYER_MAINTENANCE_SECONDS', 30)),
    runConcurrency: overrides.runConcurrency ?? int(env, 'HARNESSLAYER_RUN_CONCURRENCY', 4),
    runLeaseSeconds: overrides.runLeaseSeconds ?? Math.max(1, int(env, 'HARNESSLAYER_RUN_LEASE_SECONDS', 30)),
    runTimeoutSeconds: overrides.runTimeoutSeconds ?? Math.max(1, int(env, 'HARNESSLAYER_RUN_TIMEOUT_SECONDS', 600)),
    claudeModel: overrides.claudeModel ?? (env.ANTHROPIC_MODEL || undefined),
    openclawModel: overrides.openclawModel ?? (env.HARNESSLAYER_OPENCLAW_MODEL || env.ANTHROPIC_MODEL || undefined),
    openclawMaxGateways: overrides.openclawMaxGateways ?? Math.max(1, int(env, 'HARNESSLAYER_OPENCLAW_MAX_GATEWAYS', 2)),
    openclawIdleSeconds: overrides.openclawIdleSeconds ?? Math.max(1, int(env, 'HARNESSLAYER_OPENCLAW_IDLE_SECONDS', 600)),
    webhookRetryBaseMs: overrides.webhookRetryBaseMs ?? Math.max(1, int(env, 'HARNESSLAYER_WEBHOOK_RETRY_BASE_MS', 5_000)),
    webhookRetryWindowMs: overrides.webhookRetryWindowMs ?? int(env, 'HARNESSLAYER_WEBHOOK_RETRY_WINDOW_MS', 24 * 60 * 60 * 1000),
  };
}
