/**
 * The one home of the response vocabulary (CONTRACT §6, §9 "Responses and sessions"):
 * instance statuses, event types, their data shapes and the predicates over them. Runtimes
 * emit these events, the run pipeline stores them with `seq`, poll and SSE serve them.
 */

export const INSTANCE_STATUSES = ['queued', 'running', 'completed', 'failed', 'stopped'] as const;
export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];

export const FINAL_STATUSES = ['completed', 'failed', 'stopped'] as const;
export type FinalStatus = (typeof FINAL_STATUSES)[number];

export function isInstanceStatus(value: string): value is InstanceStatus {
  return (INSTANCE_STATUSES as readonly string[]).includes(value);
}

/** An instance in a final status never changes again (stop leaves it as it is). */
export function isFinalStatus(value: string): value is FinalStatus {
  return (FINAL_STATUSES as readonly string[]).includes(value);
}

export const EVENT_TYPES = ['status', 'text.delta', 'message', 'tool.call', 'tool.result', 'error', 'result'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export function isEventType(value: string): value is EventType {
  return (EVENT_TYPES as readonly string[]).includes(value);
}

export interface Usage {
  /** Input tokens the model read, cache reads and cache writes included. */
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
}

export const ZERO_USAGE: Usage = Object.freeze({ inputTokens: 0, outputTokens: 0, costUsd: 0 });

export interface EventData {
  status: { status: InstanceStatus };
  'text.delta': { text: string };
  message: { role: 'user' | 'assistant'; content: string };
  'tool.call': { id: string; name: string; input: unknown };
  'tool.result': { toolCallId: string; output: string; isError: boolean };
  error: { message: string; code?: string };
  result: { status: FinalStatus; output: string | null; error: string | null; usage: Usage };
}

/** One event as a runtime emits it, before the pipeline gives it a `seq`. */
export type RuntimeEvent = { [T in EventType]: { type: T; data: EventData[T] } }[EventType];

export type EventSink = (event: RuntimeEvent) => void;

/** The last event of every instance: `done: true` belongs to it and to no other type. */
export function isDoneEvent(event: { type: string }): boolean {
  return event.type === 'result';
}

export function resultEvent(data: EventData['result']): RuntimeEvent {
  return { type: 'result', data };
}

export function assertNever(value: never): never {
  throw new Error(`Unexpected value: ${JSON.stringify(value)}`);
}
