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
  /** Inputs of turns stopped before the model saw them, oldest first (migration 011). */
  carriedInputs: Generated<string[]>;
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
  // Run bookkeeping (migration 004_responses; see src/runtime/README.md).
  /** Arrival order: one session's runs execute in this order. */
  runOrder: ColumnType<number | string, never, never>;
  /** `[{mediaType, data}]` or `[{url}]` until the run ends. */
  images: ColumnType<RunImage[] | null, string | null | undefined, string | null>;
  /** Highest event seq written. */
  lastSeq: Generated<number>;
  workerId: Generated<string | null>;
  leaseUntil: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  attempt: Generated<number>;
  stopRequested: Generated<boolean>;
  enqueuedAt: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export type RunImage = { mediaType: string; data: string } | { url: string };

export interface EventsTable {
  instanceId: string;
  seq: number;
  type: string;
  data: ColumnType<unknown, string, string>;
  done: Generated<boolean>;
  createdAt: Timestamp;
}

export interface SessionTranscriptsTable {
  organizationId: string;
  sessionId: string;
  sdkSessionId: string;
  /** gzipped JSONL, Claude Code's own format. */
  transcript: Uint8Array;
  updatedAt: Timestamp;
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
  /** The `profileIds` the sync was limited to; null: every profile of the app. */
  profileIds: ColumnType<string[] | null, string | null, string | null>;
  error: string | null;
}

export interface SyncItemsTable {
  syncId: string;
  profileId: string;
  outcome: 'updated' | 'unchanged' | 'failed' | null;
  conflicted: Generated<boolean>;
  error: string | null;
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

// Versioned file storage (migration 002_files; see src/storage/README.md).
export interface BlobsTable {
  /** sha256, 64 lowercase hex. */
  hash: string;
  size: number;
  /** A copy of contents up to 64 KiB; the blob store holds every blob. */
  data: Uint8Array | null;
  createdAt: Generated<Date>;
}

export interface TreesTable {
  hash: string;
  fileCount: number;
  size: number;
}

export interface TreeEntriesTable {
  treeHash: string;
  path: string;
  blobHash: string;
  size: number;
}

export interface OverlaysTable {
  hash: string;
  entryCount: number;
}

export interface OverlayEntriesTable {
  overlayHash: string;
  path: string;
  /** Null: deleted relative to the base version. */
  blobHash: string | null;
  size: number | null;
}

export interface VersionsTable {
  organizationId: string;
  id: string;
  appId: string;
  number: number;
  parentVersionId: string | null;
  treeHash: string;
  fileCount: number;
  size: number;
  /** The upload it was registered from (null before migration 010). */
  uploadId: Generated<string | null>;
  createdAt: Generated<Date>;
}

export type StateSource = 'init' | 'upload' | 'run' | 'sync' | 'snapshot' | 'rollback';
export type StateStatus = 'ready' | 'materializing' | 'failed';

export interface StatesTable {
  organizationId: string;
  id: string;
  profileId: string;
  appId: string;
  number: number;
  parentStateId: string | null;
  baseVersionId: string | null;
  overlayHash: string | null;
  treeHash: string | null;
  fileCount: Generated<number>;
  size: Generated<number>;
  source: StateSource;
  status: StateStatus;
  error: string | null;
  sandboxId: string | null;
  /** `source: upload`: the upload it was registered from (null for other sources, and before migration 010). */
  uploadId: Generated<string | null>;
  createdAt: Generated<Date>;
}

export interface UploadFile {
  name: string;
  /** sha256 hex. */
  hash: string;
  /** Already referenced by the organization when the upload was made (PUT optional). */
  exists: boolean;
}

export interface UploadsTable {
  id: string;
  organizationId: string;
  kind: 'version' | 'state';
  appId: string;
  profileId: string | null;
  targetId: string;
  files: ColumnType<UploadFile[], string, string>;
  expectedHeadStateId: string | null;
  expectedHeadSeq: number | null;
  status: 'open' | 'registered';
  registeredId: string | null;
  expiresAt: Timestamp;
  createdAt: Generated<Date>;
}

export interface RollbacksTable {
  id: string;
  organizationId: string;
  appId: string;
  profileId: string | null;
  kind: 'version' | 'state';
  fromId: string | null;
  toId: string;
  reason: string | null;
  createdAt: Generated<Date>;
}

// Outbound deliveries and inbound iMessages (migration 005_deliveries; see src/channels/README.md).
export interface WebhookDeliveriesTable {
  id: string;
  organizationId: string;
  webhookId: string | null;
  channelId: string | null;
  /** The profile the event is about (deleted with it), when there is one. */
  profileId: string | null;
  event: string;
  /** The JSON body, exactly as every attempt sends it. */
  body: string;
  status: Generated<'pending' | 'delivered' | 'failed'>;
  attempts: Generated<number>;
  lastStatus: number | null;
  lastError: string | null;
  createdAt: Generated<Date>;
  deliveredAt: Date | null;
}

export interface SendblueMessagesTable {
  channelId: string;
  messageHandle: string;
  organizationId: string;
  fromNumber: string;
  groupId: string | null;
  content: string | null;
  /** JSON list of media URLs. */
  mediaUrls: string | null;
  status: Generated<'received' | 'running' | 'replying' | 'replied' | 'no_reply' | 'failed'>;
  instanceId: string | null;
  replyText: string | null;
  replyPartsSent: Generated<number>;
  replyAttempts: Generated<number>;
  repliedAt: Date | null;
  error: string | null;
  createdAt: Generated<Date>;
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
  syncItems: SyncItemsTable;
  conflicts: ConflictsTable;
  history: HistoryTable;
  idempotencyKeys: IdempotencyKeysTable;
  settings: SettingsTable;
  blobs: BlobsTable;
  trees: TreesTable;
  treeEntries: TreeEntriesTable;
  overlays: OverlaysTable;
  overlayEntries: OverlayEntriesTable;
  versions: VersionsTable;
  states: StatesTable;
  uploads: UploadsTable;
  rollbacks: RollbacksTable;
  events: EventsTable;
  sessionTranscripts: SessionTranscriptsTable;
  webhookDeliveries: WebhookDeliveriesTable;
  sendblueMessages: SendblueMessagesTable;
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
export type Version = Selectable<VersionsTable>;
export type State = Selectable<StatesTable>;
export type Upload = Selectable<UploadsTable>;
export type StoredEvent = Selectable<EventsTable>;
export type WebhookDelivery = Selectable<WebhookDeliveriesTable>;
export type SendblueMessage = Selectable<SendblueMessagesTable>;
