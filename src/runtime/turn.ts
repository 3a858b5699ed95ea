import type { Ctx } from '../core/context.js';
import type { Tx } from '../storage/db.js';
import type { App, Instance } from '../storage/schema.js';
import type { TurnImage } from './claude.js';
import type { EventSink, FinalStatus, Usage } from './events.js';

/**
 * What the run pipeline asks of a runtime: run one turn of `instance` in `cwd` (already
 * holding the profile's files), report events through `onEvent`, honour `abortSignal`
 * (stop), and say what to store with the instance's final transaction.
 */
export interface TurnRequest {
  ctx: Ctx;
  instance: Instance;
  app: App;
  cwd: string;
  /**
   * A directory of the turn's own outside `cwd` (so never committed), removed once the runtime
   * has returned: where a runtime keeps its private files (Claude Code's config dir and HOME),
   * so nothing of one user's turn outlives it on the worker.
   */
  scratch: string;
  /** What to send the model: the instance's input, after any carried ones (core/runs.ts, carriedPrompt). */
  prompt: string;
  images: TurnImage[];
  abortSignal: AbortSignal;
  onEvent: EventSink;
}

export interface TurnOutcome {
  status: FinalStatus;
  output: string;
  error: string | null;
  usage: Usage;
  /** Runtime state to keep (e.g. the session transcript), written in the final transaction. */
  persist?: (tx: Tx) => Promise<void>;
  /** The prompt reached the conversation: the session's next turn will have it. */
  inputKept: boolean;
}

export type Runtime = (req: TurnRequest) => Promise<TurnOutcome>;

/** A failure before or around the turn, with the `code` its `error` event carries. */
export class TurnError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}
