// Type declarations for ssegate.js (served beside it at /ssegate.d.ts).

/** One server-sent event, as the Python ssegate.Event: data, type, last event id, retry. */
export interface SSEEvent {
  /** The payload; several `data` lines joined with LF. */
  data: string;
  /** The event type; "message" when the server named none. */
  event: string;
  /** The last event id in force when the event was dispatched ("" before any `id`). */
  id: string;
  /** The `retry` (ms) of this event's own block, or null. */
  retry: number | null;
}

export const DEFAULT_RETRY_MS: number;
export const DEFAULT_MAX_DELAY_MS: number;
export const DEFAULT_MAX_ATTEMPTS: number;
export const DEFAULT_READ_TIMEOUT_MS: number;
export const MAX_RETRY_AFTER_MS: number;
export const MAX_ERROR_BODY: number;

export interface SSEDecoderOptions {
  /** The id events carry until the stream sends one (a resumed connection's). */
  lastEventId?: string;
  /** Most characters one event's data may hold (default 32 MiB). */
  maxEventSize?: number;
  /** Longest line accepted (default maxEventSize + 1024). */
  maxLineSize?: number | null;
}

/** The incremental event-stream parser (HTML § 9.2.6), as the Python ssegate.Decoder. */
export class SSEDecoder {
  constructor(options?: SSEDecoderOptions);
  /** The last event id dispatched ("" if none): send it as Last-Event-ID. */
  readonly lastEventId: string;
  /** The latest valid `retry` the server sent (ms), or null. */
  readonly retry: number | null;
  /** Feed the next bytes (UTF-8) or text; returns the events they complete. */
  feed(chunk: string | Uint8Array | ArrayBuffer): SSEEvent[];
  /** End of stream: an unfinished event is dropped; returns no events. */
  close(): SSEEvent[];
}

/** Base class of every error ssegate.js raises. */
export class SSEError extends Error {}

/** The server answered with a status that is not an event stream (and not retried). */
export class HTTPError extends SSEError {
  status: number;
  /** The first MAX_ERROR_BODY bytes of the response body, as text. */
  body: string;
  headers: Headers;
  url: string;
}

/** Not an event stream: a wrong Content-Type (status, contentType and body set) or a line too long. */
export class ProtocolError extends SSEError {
  status: number | null;
  contentType: string | null;
  body: string;
  headers: Headers | null;
}

/** The connection failed, broke or stayed silent longer than readTimeoutMs. */
export class NetworkError extends SSEError {}

/** A non-GET stream broke and the server named no URL (Link rel="events") to resume it by GET. */
export class NotResumableError extends SSEError {}

/** Too many consecutive attempts failed. */
export class RetryLimitError extends SSEError {
  attempts: number;
}

export interface RetryOptions {
  /** Consecutive failed attempts tolerated before RetryLimitError (default 10; null: no limit; 0: never reconnect). */
  maxAttempts?: number | null;
  /** Reconnection time until the server sends `retry` (ms, default 3000). */
  initialDelayMs?: number;
  /** Longest wait between attempts (ms, default 30000). */
  maxDelayMs?: number;
  /** Back-off factor per consecutive failure (default 2). */
  multiplier?: number;
  /** Share of the delay taken off at random, 0 to 1 (default 0.2). */
  jitter?: number;
}

export interface RetryInfo {
  /** Consecutive failures so far (1 for the first). */
  attempt: number;
  delayMs: number;
  /** What went wrong (null when the server ended the stream cleanly). */
  error: Error | null;
}

export interface StreamOptions {
  method?: string;
  headers?: HeadersInit;
  /** A string (or other fetch body) as is; any other object is sent as JSON. */
  body?: BodyInit | object | null;
  signal?: AbortSignal;
  /** The id to resume after (sent as Last-Event-ID). */
  lastEventId?: string;
  retry?: RetryOptions;
  /** Reconnect at all (default true). */
  reconnect?: boolean;
  /** Allow re-sending a non-GET request whose server named no events URL (default false). */
  resend?: boolean;
  /** Stop (without reconnecting) at the first event this accepts; true: isTerminal. `data: [DONE]` is not delivered. */
  untilDone?: boolean | ((ev: SSEEvent) => boolean);
  /** Ms without a byte after which the connection counts as dropped (default 60000; null: never). */
  readTimeoutMs?: number | null;
  /** Origins (scheme://host[:port]) besides the URL's that may receive the credential headers. */
  trustedOrigins?: string[];
  /** fetch's `credentials` for requests to the URL's origin. */
  credentials?: RequestCredentials;
  onOpen?: (response: Response) => void;
  onEvent?: (ev: SSEEvent) => void;
  onRetry?: (info: RetryInfo) => void;
  /** The error that ended the stream (not called on close or abort). */
  onError?: (error: Error) => void;
  /** Called exactly once when the stream ends, however it ends. */
  onClose?: () => void;
  /** For tests and other environments. */
  fetch?: typeof fetch;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  now?: () => number;
  random?: () => number;
}

/** A reconnecting event stream; iterate it or use the callbacks. */
export class EventStream implements AsyncIterable<SSEEvent> {
  constructor(url: string | URL, options?: StreamOptions);
  readonly url: string;
  readonly method: string;
  /** The X-Stream-Id the server named, or null. */
  readonly streamId: string | null;
  /** The id the next request sends as Last-Event-ID ("" while none). */
  readonly lastEventId: string;
  /** Where a broken non-GET stream resumes by GET, or null. */
  readonly eventsUrl: string | null;
  /** The reconnection time in force (ms). */
  readonly retryMs: number;
  /** The status of the last response, or null. */
  readonly status: number | null;
  readonly response: Response | null;
  readonly closed: boolean;
  /** Resolves when the stream ends (finished, closed, aborted); rejects with the error that ended it. */
  readonly done: Promise<void>;
  /** Stop now; onClose follows, once. */
  close(): void;
  [Symbol.asyncIterator](): AsyncIterableIterator<SSEEvent>;
}

export function stream(url: string | URL, options?: StreamOptions): EventStream;
export function isTerminal(ev: SSEEvent): boolean;
export function isEventStream(contentType: string | null | undefined): boolean;
/** Ms to wait from a Retry-After value, or null if it is not one. */
export function parseRetryAfter(value: string | null | undefined, now?: number): number | null;
/** The target of the rel="events" link in a Link header value, or null. */
export function eventsLink(value: string | null | undefined): string | null;
