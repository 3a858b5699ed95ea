import fs from 'node:fs/promises';
import path from 'node:path';
import { withUnpackedBundle } from './bundle-file.js';
import { ApiError, HarnesslayerClient } from './client.js';
import { deployFolder, listFolder, type DeployProgress } from './deploy.js';

/**
 * The TypeScript SDK: the Python SDK's shape (spec/product-notes.md) on this server's API.
 *
 *   const client = new Harnesslayer({ apiKey: 'dk-...' });
 *   const app = await client.app.init('my-app', { type: 'claude', versionPath: '.claude' });
 *   await app.version.create({ versionPath: '.claude' });
 *   const channel = await app.channel.init('my-api', { type: 'api' });
 *   for await (const event of channel.run({ sessionId: 's-1', userId: 'someone@example.com', input: 'hello' })) {
 *     if (event.done) break;
 *   }
 */

export interface HarnesslayerOptions {
  /** An organization key (dk-...); default HARNESSLAYER_API_KEY. */
  apiKey?: string;
  /** Default HARNESSLAYER_URL, else http://127.0.0.1:8787. */
  baseUrl?: string;
}

export interface AppLimit {
  amount: number;
  interval: 'daily' | 'monthly' | 'yearly';
  name?: string;
  message?: string;
}

export interface Credential {
  type: 'static_bearer';
  mcp_server_url: string;
  token: string;
}

export interface AppData {
  id: string;
  slug: string;
  name: string;
  type: 'claude' | 'openclaw';
  headVersionId: string | null;
  defaultAccessGroupId: string;
  status: string;
  createdAt: string;
  updatedAt: string;
}

export interface VersionData {
  id: string;
  number: number;
  fileCount: number;
  size: number;
  treeHash: string;
}

export interface ChannelData {
  id: string;
  appId: string;
  slug: string;
  type: 'api' | 'imessage';
  [field: string]: unknown;
}

/** One event of a response, as `GET /v1/response/stream/{id}` sends it. */
export interface ResponseEvent {
  seq: number;
  type: string;
  data: Record<string, unknown>;
  done: boolean;
  createdAt: string;
}

export interface RunStarted {
  instanceId: string;
  sessionId: string;
  profileId: string;
  status: string;
}

const isNotFound = (err: unknown) => err instanceof ApiError && err.status === 404;

export class Harnesslayer {
  readonly http: HarnesslayerClient;
  readonly app = {
    /**
     * Get-or-create by slug. On create (which needs `type`) the folder at `versionPath` is
     * checked first, then uploaded as the first version, which becomes the head.
     */
    init: async (slug: string, opts: { type?: AppData['type']; versionPath?: string; name?: string; limit?: AppLimit; credentials?: Credential[] } = {}): Promise<App> => {
      const existing = await this.http.get<AppData>(`/v1/app/${encodeURIComponent(slug)}`).catch((err: unknown) => {
        if (isNotFound(err)) return null;
        throw err;
      });
      if (existing) return new App(this.http, existing);
      if (!opts.type) throw new Error(`App "${slug}" does not exist yet: give its type ('claude' or 'openclaw') to create it.`);
      if (opts.versionPath !== undefined) await checkFolder(opts.versionPath);
      const { versionPath, ...fields } = opts;
      const created = await this.http.post<AppData>('/v1/app/create', { slug, ...fields, returnIfExist: true });
      const app = new App(this.http, created);
      if (versionPath !== undefined && created.headVersionId === null) await app.version.create({ versionPath });
      return app;
    },
    get: async (id: string): Promise<App> => new App(this.http, await this.http.get<AppData>(`/v1/app/${encodeURIComponent(id)}`)),
  };

  constructor(opts: HarnesslayerOptions = {}) {
    const apiKey = opts.apiKey ?? process.env.HARNESSLAYER_API_KEY;
    if (!apiKey) throw new Error('Give an organization API key (dk-...): new Harnesslayer({ apiKey }) or HARNESSLAYER_API_KEY.');
    this.http = new HarnesslayerClient({ baseUrl: opts.baseUrl ?? process.env.HARNESSLAYER_URL ?? 'http://127.0.0.1:8787', apiKey });
  }
}

export class App {
  readonly version = {
    /** Uploads a folder (or a zip bundle of one) as the next version, or registers one uploaded under `versionId`; it becomes the head. */
    create: async (from: { versionPath: string; onProgress?: (p: DeployProgress) => void } | { versionId: string }): Promise<VersionData> => {
      const version =
        'versionId' in from
          ? await this.http.post<VersionData>('/v1/version/create', { appId: this.data.id, versionId: from.versionId })
          : (await deployFolder(this.http, from.versionPath, this.data.id, { onProgress: from.onProgress })).version;
      this.data = { ...this.data, headVersionId: version.id };
      return version;
    },
  };

  readonly channel = {
    /** Get-or-create by slug: an existing channel keeps its settings. */
    init: async (slug: string, opts: { type: ChannelData['type']; name?: string; data?: Record<string, string>; webhook?: Record<string, unknown> }): Promise<Channel> =>
      new Channel(this.http, await this.http.post<ChannelData>('/v1/channel/create', { appId: this.data.id, slug, ...opts, returnIfExist: true })),
  };

  constructor(
    private readonly http: HarnesslayerClient,
    /** The app as the server last returned it. */
    public data: AppData,
  ) {}

  get id(): string {
    return this.data.id;
  }
}

export class Channel {
  constructor(
    private readonly http: HarnesslayerClient,
    readonly data: ChannelData,
  ) {}

  get id(): string {
    return this.data.id;
  }

  /** Starts a response at once; iterate the stream for its events (the last one is `done`). */
  run(input: { userId: string; input?: string; sessionId?: string; images?: ({ mediaType: string; data: string } | { url: string })[] }): ResponseStream {
    return new ResponseStream(this.http, this.http.post<RunStarted>('/v1/response/run', { appId: this.data.appId, channelId: this.data.id, ...input }));
  }
}

/**
 * A stream that broke off is read again from its last event, after 0.5, 1, 2, 4 and 8 s (a
 * server restarting, say); each event that arrives starts the count again.
 */
const RESUMES = 5;
const RESUME_FIRST_WAIT_MS = 500;

/**
 * A response's events, read from its server-sent event stream, resumed from the last event
 * seen (Last-Event-ID) when the connection breaks. Iterating it ends after the `done` event.
 */
export class ResponseStream implements AsyncIterable<ResponseEvent> {
  /** The run's ids (or its refusal, such as a 429 with the group's limit message). */
  readonly started: Promise<RunStarted>;

  constructor(
    private readonly http: HarnesslayerClient,
    started: Promise<RunStarted>,
  ) {
    this.started = started;
    started.catch(() => {}); // reported where it is awaited, or by iterating
  }

  /** Asks the server to stop the response; its stream then ends with `stopped`. */
  async stop(): Promise<void> {
    const { instanceId } = await this.started;
    await this.http.post('/v1/response/stop', { instanceId });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ResponseEvent> {
    const { instanceId } = await this.started;
    let lastSeq = 0;
    for (let resume = 0; ; resume++) {
      try {
        for await (const event of sseEvents(await this.http.stream(`/v1/response/stream/${instanceId}`, lastSeq))) {
          lastSeq = event.seq;
          resume = 0;
          yield event;
          if (event.done) return;
        }
      } catch (err) {
        // Refused, not broken off; but a server or its proxy that is restarting answers 502-504.
        if (err instanceof ApiError && ![0, 502, 503, 504].includes(err.status)) throw err;
      }
      // The connection broke off (or ended early): read on from the last event.
      if (resume >= RESUMES) {
        throw new Error(`The event stream of ${instanceId} broke off and could not be read again; read the rest with GET /v1/response/stream/${instanceId} (Last-Event-ID: ${lastSeq}).`);
      }
      await new Promise((resolve) => setTimeout(resolve, RESUME_FIRST_WAIT_MS * 2 ** resume));
    }
  }
}

/** The events of an SSE response body (heartbeat comments skipped). */
async function* sseEvents(res: Response): AsyncGenerator<ResponseEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = /^data: (.*)$/m.exec(frame)?.[1];
      if (data) yield JSON.parse(data) as ResponseEvent;
    }
  }
}

/** What `app.init` checks before it creates anything: a folder holding files to upload, or a bundle of one. */
async function checkFolder(folder: string): Promise<void> {
  if ((await fs.stat(folder).catch(() => null))?.isFile()) return withUnpackedBundle(folder, checkFolder);
  if ((await listFolder(folder)).length === 0) throw new Error(`${path.resolve(folder)} holds no files to upload (after .harnesslayerignore).`);
}
