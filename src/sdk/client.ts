/**
 * A small TypeScript client for the Harnesslayer API (the SDK, the CLI and the benchmarks use it).
 * Every reply is the envelope; an error reply becomes an ApiError carrying status and code.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

export interface ClientOptions {
  /** e.g. http://127.0.0.1:8787 (HARNESSLAYER_URL). */
  baseUrl: string;
  /** An organization key for /v1 resources, a user key for /v1/organization/*. */
  apiKey: string;
}

export class HarnesslayerClient {
  readonly baseUrl: string;

  constructor(private readonly opts: ClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
  }

  async request<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.opts.apiKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      throw new ApiError(0, `Cannot reach ${this.baseUrl}: ${(err as Error).message}. Is the server running (harnesslayer serve)?`);
    }
    const text = await res.text();
    let json: { success?: boolean; data?: T; error?: string; code?: string; details?: unknown };
    try {
      json = JSON.parse(text);
    } catch {
      throw new ApiError(res.status, `${method} ${path}: the server answered ${res.status} with a body that is not JSON`);
    }
    if (!res.ok || !json.success) throw new ApiError(res.status, json.error ?? `${method} ${path} failed with ${res.status}`, json.code, json.details);
    return json.data as T;
  }

  /** Opens a server-sent event stream after event `lastEventId` (Last-Event-ID); an error reply becomes an ApiError. */
  async stream(path: string, lastEventId = 0): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        headers: { authorization: `Bearer ${this.opts.apiKey}`, accept: 'text/event-stream', 'last-event-id': String(lastEventId) },
      });
    } catch (err) {
      throw new ApiError(0, `Cannot reach ${this.baseUrl}: ${(err as Error).message}. Is the server running (harnesslayer serve)?`);
    }
    if (res.ok && res.body) return res;
    const text = await res.text();
    let json: { error?: string; code?: string } = {};
    try {
      json = JSON.parse(text);
    } catch {
      // not the envelope
    }
    throw new ApiError(res.status, json.error ?? `GET ${path} failed with ${res.status}`, json.code);
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  post<T = unknown>(path: string, body: unknown = {}): Promise<T> {
    return this.request<T>('POST', path, body);
  }
}
