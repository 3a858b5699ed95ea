import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

// The database as code sees it (camelCase; CamelCasePlugin maps to snake_case columns).
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json = ColumnType<unknown, string, string>;

export interface UsersTable {
  id: string;
  email: string | null;
  createdAt: Generated<Date>;
}

export interface ApiKeysTable {
  keyHash: string;
  kind: 'user' | 'organization';
  userId: string | null;
  organizationId: string | null;
  last4: string;
  createdAt: Generated<Date>;
}

export interface OrganizationsTable {
  id: string;
  slug: string;
  name: string;
  ownerUserId: string;
  createdAt: Generated<Date>;
  updatedAt: Timestamp;
}

export interface AppsTable {
  id: string;
  organizationId: string;
  slug: string;
  name: string;
  type: 'claude' | 'openclaw';
  headVersionId: string | null;
  defaultAccessGroupId: string | null;
  /** Encrypted JSON list of credentials. */
  credentials: string | null;
  status: Generated<'active' | 'deleting'>;
  createdAt: Generated<Date>;
  updatedAt: Timestamp;
}

export interface AccessGroupsTable {
  id: string;
  organizationId: string;
  appId: string;
  name: string;
  limit: number | null;
  limitReset: 'daily' | 'monthly' | 'yearly';
  limitMessage: string | null;
  isDefault: Generated<boolean>;
  createdAt: Generated<Date>;
  updatedAt: Timestamp;
}

export interface ChannelsTable {
  id: string;
  organizationId: string;
  appId: string;
  slug: string;
  name: string;
  type: 'api' | 'imessage';
  /** Encrypted JSON `{name, url, headers, secret}`. */
  webhook: string | null;
  /** Encrypted JSON iMessage data. */
  data: string | null;
  inboundToken: string | null;
  createdAt: Generated<Date>;
  updatedAt: Timestamp;
}

export interface ProfilesTable {
  id: string;
  organizationId: string;
  appId: string;
  identifier: string;
  accessGroupId: string;
  metadata: Json | null;
  headStateId: string | null;
  baseVersionId: string | null;
  headSeq: Generated<number>;
  status: Generated<'active' | 'deleting'>;
  createdAt: Generated<Date>;
  updatedAt: Timestamp;
}

export interface UsageCountersTable {
  profileId: string;
  period: 'daily' | 'monthly' | 'yearly';
  periodStart: Timestamp;
  used: Generated<number>;
}

export interface SessionsTable {
  id: string;
  organizationId: string;
  appId: string;
  type: 'single' | 'group';
  profileId: string | null;
  lastInstanceId: string | null;
  turns: Generated<number>;
  createdAt: Generated<Date>;
  lastActiveAt: Timestamp;
}

export interface WebhooksTable {
  id: string;
  organizationId: string;
  appId: string;
  event: string;
  method: string;
  url: string;
  /** Encrypted JSON string map. */
  headers: string | null;
  /** Encrypted `whsec_...`. */
  secret: string;
  runCount: Generated<number>;
  lastTriggeredAt: Date | null;
  createdAt: Generated<Date>;
  updatedAt: Timestamp;
}

export interface InstancesTable {
  id: string;
  organizationId: string;
  appId: string;
  channelId: string | null;
  sessionId: string | null;
  profileId: string | null;
  userId: string | null;
  status: string;
  input: string | null;
  output: string | null;
  error: string | null;
  inputTokens: Generated<number>;
  outputTokens: Generated<number>;
  costUsd: Generated<number>;
  stateId: string | null;
  createdAt: Generated<Date>;
  startedAt: Date | null;
  completedAt: Date | null;
}

export interface SyncsTable {
  id: string;
  organizationId: string;
  appId: string;
  versionId: string;
  strategy: string;
  status: string;
  total: Generated<number>;
  processed: Generated<number>;
  updated: Generated<number>;
  unchanged: Generated<number>;
  conflicted: Generated<number>;
  failed: Generated<number>;
  createdAt: Generated<Date>;
  startedAt: Date | null;
  completedAt: Date | null;
}

export interface ConflictsTable {
  id: string;
  organizationId: string;
  appId: string;
  profileId: string;
  syncId: string;
  path: string;
  kind: string;
  strategy: string;
  status: string;
  resolution: string | null;
  baseHash: string | null;
  currentHash: string | null;
  incomingHash: string | null;
  resultHash: string | null;
  createdAt: Generated<Date>;
}

export interface HistoryTable {
  id: string;
  organizationId: string;
  appId: string;
  instanceId: string | null;
  channelId: string | null;
  sessionId: string | null;
  profileId: string | null;
  userId: string | null;
  status: string;
  input: string | null;
  output: string | null;
  inputTokens: Generated<number>;
  outputTokens: Generated<number>;
  costUsd: Generated<number>;
  createdAt: Generated<Date>;
}

export interface IdempotencyKeysTable {
  keyHash: string;
  method: string;
  path: string;
  idempotencyKey: string;
  bodyHash: string;
  statusCode: number | null;
  response: Json | null;
  createdAt: Generated<Date>;
}

export interface SettingsTable {
  key: string;
  value: string;
}

export interface DB {
  users: UsersTable;
  apiKeys: ApiKeysTable;
  organizations: OrganizationsTable;
  apps: AppsTable;
  accessGroups: AccessGroupsTable;
  channels: ChannelsTable;
  profiles: ProfilesTable;
  usageCounters: UsageCountersTable;
  sessions: SessionsTable;
  webhooks: WebhooksTable;
  instances: InstancesTable;
  syncs: SyncsTable;
  conflicts: ConflictsTable;
  history: HistoryTable;
  idempotencyKeys: IdempotencyKeysTable;
  settings: SettingsTable;
}

export type App = Selectable<AppsTable>;
export type AccessGroup = Selectable<AccessGroupsTable>;
export type Channel = Selectable<ChannelsTable>;
export type Profile = Selectable<ProfilesTable>;
export type Session = Selectable<SessionsTable>;
export type Webhook = Selectable<WebhooksTable>;
export type Instance = Selectable<InstancesTable>;
export type Sync = Selectable<SyncsTable>;
export type Conflict = Selectable<ConflictsTable>;
export type History = Selectable<HistoryTable>;
export type Organization = Selectable<OrganizationsTable>;
export type NewProfile = Insertable<ProfilesTable>;
export type ProfileUpdate = Updateable<ProfilesTable>;
