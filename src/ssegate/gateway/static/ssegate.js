// ssegate.js: server-sent events for browsers and Node >= 20, no dependencies.
//
//   import { stream } from "/ssegate.js";
//   const es = stream("/v1/chat/completions", { method: "POST", body: {...}, untilDone: true });
//   for await (const ev of es) console.log(ev.data);
//
// Two parts, mirroring the Python package (ssegate.Decoder, ssegate.EventSource):
//
// - SSEDecoder: the event-stream parser of HTML § 9.2.6, fed bytes or text in
//   chunks of any size. It runs the same spec cases as the Python decoder
//   (tests/data/sse_spec_cases.json).
// - stream(url, options): a fetch-based GET or POST that reconnects with
//   back-off and Last-Event-ID. A POST is never sent twice: a stream whose
//   response named its events URL (`Link: <url>; rel="events"`) resumes by GET
//   there; without one, a broken POST stream is an error (NotResumableError).
//   Retries stop: a cap on consecutive failures, no retry of 4xx (but 408 and
//   429), Retry-After obeyed. Nothing happens when a tab is hidden. Closing or
//   aborting always ends with onClose, called exactly once.
//
// Credentials stay with their origin: Authorization, Cookie and
// Proxy-Authorization go only to the origin of the URL the caller gave (or one
// in `trustedOrigins`), never to another origin a Link points at.

const MAX_EVENT_SIZE = 32 * 1024 * 1024;
const LINE_SLACK = 1024;
const MAX_RETRY = 999_999_999_999_999_999; // as the Python decoder's cap (read as 1e18)
const DIGITS = /^[0-9]+$/;

/** Reconnection time before the server sends `retry` (ms), as browsers and the Python client. */
export const DEFAULT_RETRY_MS = 3000;
/** Longest wait between attempts (ms). */
export const DEFAULT_MAX_DELAY_MS = 30_000;
/** Consecutive failed attempts after which the client gives up. */
export const DEFAULT_MAX_ATTEMPTS = 10;
/** Ms without a byte (not even a keep-alive comment) after which a connection counts as dropped. */
export const DEFAULT_READ_TIMEOUT_MS = 60_000;
/** Longest wait a Retry-After may ask for (one day), as the Python client. */
export const MAX_RETRY_AFTER_MS = 86_400_000;
/** Bytes of an error response's body kept on HTTPError.body. */
export const MAX_ERROR_BODY = 8 * 1024;

const CREDENTIAL_HEADERS = new Set(["authorization", "cookie", "proxy-authorization"]);
const RETRY_STATUSES = (status) => status === 408 || status === 429 || (status >= 500 && status < 600);
// Statuses that promise the request was not processed: even a POST may be sent again.
const NOT_PROCESSED = new Set([408, 429, 503]);
const TERMINAL_TYPES = new Set(["close", "done", "error"]);
// Events queued for an iterator before reading pauses, and where it resumes.
const HIGH_WATER = 1000;
const LOW_WATER = 100;

// -- errors ------------------------------------------------------------------

/** Base class of every error this module raises. */
export class SSEError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The server answered with a status that is not an event stream (and not retried). */
export class HTTPError extends SSEError {
  constructor(message, { status, body = "", headers = new Headers(), url = "" } = {}) {
    super(message);
    this.status = status;
    this.body = body;
    this.headers = headers;
    this.url = url;
  }
}

/** The bytes or the response are not an event stream (wrong Content-Type, a line too long). */
export class ProtocolError extends SSEError {
  constructor(message, { status = null, contentType = null, body = "", headers = null } = {}) {
    super(message);
    this.status = status;
    this.contentType = contentType;
    this.body = body;
    this.headers = headers;
  }
}

/** The connection failed or broke (fetch rejected, read failed, read timeout). */
export class NetworkError extends SSEError {}

/** A non-GET stream broke and the server named no URL to resume it by GET. */
export class NotResumableError extends SSEError {}

/** Too many consecutive attempts failed; `attempts` says how many, `cause` the last error. */
export class RetryLimitError extends SSEError {
  constructor(message, { attempts, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.attempts = attempts;
  }
}

// -- the decoder -------------------------------------------------------------

/**
 * The incremental event-stream parser (HTML § 9.2.6), like ssegate.Decoder.
 *
 * feed(chunk) takes bytes (Uint8Array, decoded as UTF-8 whatever the headers
 * say, bad bytes becoming U+FFFD) or text, and returns the events it
 * completes; close() ends the stream (an unfinished event is dropped).
 * `lastEventId` is what the next request sends as Last-Event-ID, `retry` the
 * latest valid reconnection time (ms) or null.
 */
export class SSEDecoder {
  constructor({ lastEventId = "", maxEventSize = MAX_EVENT_SIZE, maxLineSize = null } = {}) {
    if (/[\0\r\n]/.test(lastEventId)) {
      throw new TypeError(`lastEventId must not contain NUL, CR or LF: ${JSON.stringify(lastEventId)}`);
    }
    this._maxEvent = maxEventSize;
    this._maxLine = maxLineSize ?? maxEventSize + LINE_SLACK;
    this._utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
    this._started = false; // the first character seen (one BOM dropped)
    this._skipLF = false; // the last chunk ended with CR: an LF next is its pair
    this._line = ""; // the line in progress
    this._data = [];
    this._dataLen = 0;
    this._type = "";
    this._blockRetry = null;
    this._idBuf = lastEventId; // the spec's "last event ID buffer"
    this._lastId = lastEventId; // its "last event ID string" (set at dispatch)
    this._retry = null;
    this._closed = false;
  }

  /** The last event id dispatched ("" if none): send it as Last-Event-ID. */
  get lastEventId() {
    return this._lastId;
  }

  /** The latest valid `retry` the server sent (ms), or null. */
  get retry() {
    return this._retry;
  }

  /** Feed the next bytes (or text) of the stream; return the events they complete. */
  feed(chunk) {
    if (this._closed) throw new Error("feed() after close(): use a new SSEDecoder for a new stream");
    let text;
    if (typeof chunk === "string") text = chunk;
    else if (chunk instanceof Uint8Array) text = this._utf8.decode(chunk, { stream: true });
    else if (chunk instanceof ArrayBuffer) text = this._utf8.decode(new Uint8Array(chunk), { stream: true });
    else throw new TypeError(`feed() takes a Uint8Array or a string, not ${typeof chunk}`);
    const out = [];
    if (!this._started) {
      if (!text) return out;
      this._started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (!text) return out;
    let i = 0;
    if (this._skipLF) {
      this._skipLF = false;
      if (text.charCodeAt(0) === 10) i = 1;
    }
    const n = text.length;
    while (i < n) {
      let j = i;
      let c = 0;
      for (; j < n; j++) {
        c = text.charCodeAt(j);
        if (c === 10 || c === 13) break;
      }
      if (j === n) {
        this._line += text.slice(i);
        if (this._line.length > this._maxLine) throw this._lineTooLong(this._line.length);
        break;
      }
      const line = this._line ? this._line + text.slice(i, j) : text.slice(i, j);
      this._line = "";
      this._processLine(line, out);
      if (c === 13) {
        if (j + 1 < n) {
          if (text.charCodeAt(j + 1) === 10) j++;
        } else {
          this._skipLF = true;
        }
      }
      i = j + 1;
    }
    return out;
  }

  /** End of stream: the unfinished event, if any, is dropped (so this returns no events). */
  close() {
    if (this._closed) return [];
    this._closed = true;
    this._line = "";
    this._data = [];
    this._dataLen = 0;
    this._type = "";
    this._blockRetry = null;
    return [];
  }

  _processLine(line, out) {
    if (!line) {
      this._dispatch(out);
      return;
    }
    if (line.length > this._maxLine) throw this._lineTooLong(line.length);
    if (line.charCodeAt(0) === 58) return; // ":" comment
    const colon = line.indexOf(":");
    let name = line;
    let value = "";
    if (colon >= 0) {
      name = line.slice(0, colon);
      value = line.charCodeAt(colon + 1) === 32 ? line.slice(colon + 2) : line.slice(colon + 1);
    }
    switch (name) {
      case "data":
        this._dataLen += value.length + 1;
        if (this._dataLen > this._maxEvent + 1) {
          throw new ProtocolError(`event data exceeds the limit of ${this._maxEvent} characters`);
        }
        this._data.push(value);
        break;
      case "event":
        this._type = value;
        break;
      case "id":
        if (!value.includes("\0")) this._idBuf = value;
        break;
      case "retry":
        if (DIGITS.test(value)) {
          const digits = value.replace(/^0+/, "") || "0";
          const retry = digits.length <= 18 ? Number(digits) : MAX_RETRY;
          this._retry = this._blockRetry = retry;
        }
        break;
      default:
    }
  }

  _dispatch(out) {
    this._lastId = this._idBuf;
    if (this._data.length) {
      out.push({
        data: this._data.join("\n"),
        event: this._type || "message",
        id: this._lastId,
        retry: this._blockRetry,
      });
      this._data = [];
      this._dataLen = 0;
    }
    this._type = "";
    this._blockRetry = null;
  }

  _lineTooLong(length) {
    return new ProtocolError(`event-stream line of ${length} characters exceeds the limit of ${this._maxLine}`);
  }
}

/** True for an event that says the stream is finished: `data: [DONE]`, or type done, error or close. */
export function isTerminal(ev) {
  return ev.data === "[DONE]" || TERMINAL_TYPES.has(ev.event);
}

/** True if a Content-Type value is text/event-stream (parameters ignored). */
export function isEventStream(contentType) {
  return !!contentType && contentType.split(";", 1)[0].trim().toLowerCase() === "text/event-stream";
}

/**
 * Milliseconds to wait from a Retry-After value (whole seconds or an HTTP date),
 * or null when it is neither; at most MAX_RETRY_AFTER_MS; a past date is 0.
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null) return null;
  const text = String(value).trim();
  if (DIGITS.test(text)) return text.length > 6 ? MAX_RETRY_AFTER_MS : Math.min(Number(text) * 1000, MAX_RETRY_AFTER_MS);
  if (!/[A-Za-z]/.test(text)) return null; // "-5", "1.5": not a date either
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, when - now));
}

/** The `Link` target with rel="events" in a Link header value, or null. */
export function eventsLink(value) {
  if (!value) return null;
  const re = /<([^>]*)>((?:\s*;\s*[^;,]*)*)/g;
  for (let m = re.exec(value); m; m = re.exec(value)) {
    for (const param of m[2].split(";")) {
      const eq = param.indexOf("=");
      if (eq < 0 || param.slice(0, eq).trim().toLowerCase() !== "rel") continue;
      const rels = param.slice(eq + 1).trim().replace(/^"|"$/g, "").toLowerCase().split(/\s+/);
      if (rels.includes("events")) return m[1].trim();
    }
  }
  return null;
}

// -- the reconnecting client -------------------------------------------------

/** Start an event stream: see EventStream. */
export function stream(url, options = {}) {
  return new EventStream(url, options);
}

function defaultSleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

function baseUrl() {
  return globalThis.location?.href;
}

function isPlainBody(body) {
  return (
    typeof body === "string" ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body) ||
    (typeof Blob !== "undefined" && body instanceof Blob) ||
    (typeof FormData !== "undefined" && body instanceof FormData) ||
    body instanceof URLSearchParams ||
    (typeof ReadableStream !== "undefined" && body instanceof ReadableStream)
  );
}

function originOf(url) {
  return new URL(url).origin;
}

/**
 * A reconnecting event stream; made by stream(url, options). It starts at once.
 *
 * Iterate it (`for await (const ev of es)`) or pass callbacks (onOpen,
 * onEvent, onRetry, onError, onClose). `done` resolves when it ends (finished,
 * closed or aborted) and rejects with the error that ended it.
 */
export class EventStream {
  constructor(url, options = {}) {
    const o = options;
    this.url = new URL(url, baseUrl()).href;
    if (!/^https?:$/.test(new URL(this.url).protocol)) {
      throw new TypeError(`stream() needs an http:// or https:// URL, not ${JSON.stringify(String(url))}`);
    }
    this.method = (o.method ?? "GET").toUpperCase();
    this._headers = new Headers(o.headers ?? {});
    if (this._headers.has("last-event-id")) {
      throw new TypeError("pass lastEventId instead of a Last-Event-ID header: the client keeps it up to date across reconnects");
    }
    let body = o.body ?? null;
    if (body !== null && !isPlainBody(body)) {
      body = JSON.stringify(body);
      if (!this._headers.has("content-type")) this._headers.set("content-type", "application/json");
    }
    if (body !== null && (this.method === "GET" || this.method === "HEAD")) {
      throw new TypeError(`a ${this.method} request cannot carry a body; use method: "POST"`);
    }
    this._body = body;
    const lastEventId = o.lastEventId ?? "";
    if (/[\0\r\n]/.test(lastEventId)) {
      throw new TypeError(`lastEventId must not contain NUL, CR or LF: ${JSON.stringify(lastEventId)}`);
    }
    const retry = o.retry ?? {};
    this._reconnect = o.reconnect ?? true;
    this._maxAttempts = retry.maxAttempts === undefined ? DEFAULT_MAX_ATTEMPTS : retry.maxAttempts;
    this._maxDelayMs = retry.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
    this._multiplier = retry.multiplier ?? 2;
    this._jitter = retry.jitter ?? 0.2;
    this._retryMs = retry.initialDelayMs ?? DEFAULT_RETRY_MS;
    this._readTimeoutMs = o.readTimeoutMs === undefined ? DEFAULT_READ_TIMEOUT_MS : o.readTimeoutMs;
    this._resend = !!o.resend;
    this._trusted = new Set((o.trustedOrigins ?? []).map(originOf));
    this._fetch = o.fetch ?? globalThis.fetch.bind(globalThis);
    this._sleep = o.sleep ?? defaultSleep;
    this._now = o.now ?? Date.now;
    this._random = o.random ?? Math.random;
    this._credentials = o.credentials;
    this._stopAt = o.untilDone === true ? isTerminal : typeof o.untilDone === "function" ? o.untilDone : null;
    this._on = {
      open: o.onOpen,
      event: o.onEvent,
      retry: o.onRetry,
      error: o.onError,
      close: o.onClose,
    };

    this._lastId = lastEventId;
    this._failures = 0;
    this._progress = false;
    this._retryAfterMs = null;
    this._eventsUrl = null;
    this._streamId = null;
    this._status = null;
    this._response = null;
    this._received = 0;
    this._closed = false; // close() called (or the signal aborted)
    this._finished = false; // no more events will come
    this._ended = false; // the run loop has ended
    this._error = null;
    this._queue = [];
    this._buffer = !o.onEvent; // keep events for an iterator
    this._waiters = [];
    this._drained = null; // set while reading waits for the iterator to catch up
    this._abort = new AbortController();

    let resolveDone;
    let rejectDone;
    this.done = new Promise((res, rej) => {
      resolveDone = res;
      rejectDone = rej;
    });
    this.done.catch(() => {}); // an error also reaches onError and the iterator: never "unhandled"
    this._resolveDone = resolveDone;
    this._rejectDone = rejectDone;

    const signal = o.signal;
    if (signal) {
      if (signal.aborted) this._closed = true;
      else {
        const onAbort = () => this.close();
        signal.addEventListener("abort", onAbort, { once: true });
        this._unlisten = () => signal.removeEventListener("abort", onAbort);
      }
    }
    queueMicrotask(() => this._run());
  }

  /** The X-Stream-Id the server named for this stream, or null. */
  get streamId() {
    return this._streamId;
  }

  /** The id the next request sends as Last-Event-ID ("" while none). */
  get lastEventId() {
    return this._lastId;
  }

  /** Where a broken non-GET stream resumes by GET (from `Link: <url>; rel="events"`), or null. */
  get eventsUrl() {
    return this._eventsUrl;
  }

  /** The reconnection time in force (ms): the server's last `retry`, or the initial delay. */
  get retryMs() {
    return this._retryMs;
  }

  /** The status of the last response (null before the first). */
  get status() {
    return this._status;
  }

  /** The last response (its headers), null before the first. */
  get response() {
    return this._response;
  }

  /** True once close() was called or the signal aborted. */
  get closed() {
    return this._closed;
  }

  /** Stop: no further request, the open one is aborted; onClose follows (once). */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._abort.abort();
    this._drained?.();
    this._wake();
  }

  [Symbol.asyncIterator]() {
    this._buffer = true;
    return {
      next: () => this._next(),
      return: async () => {
        this.close();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  async _next() {
    for (;;) {
      if (this._queue.length) {
        const value = this._queue.shift();
        if (this._drained && this._queue.length <= LOW_WATER) this._drained();
        return { value, done: false };
      }
      if (this._ended || this._closed) {
        if (this._error) {
          const error = this._error;
          this._error = null; // raised once
          throw error;
        }
        return { value: undefined, done: true };
      }
      await new Promise((resolve) => this._waiters.push(resolve));
    }
  }

  _wake() {
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) w();
  }

  // -- the loop ---------------------------------------------------------------

  async _run() {
    try {
      while (!this._closed && !this._finished) {
        const delay = await this._attempt();
        if (delay == null || this._closed || this._finished) break;
        await this._sleep(delay, this._abort.signal);
      }
      this._resolveDone();
    } catch (error) {
      if (this._closed) {
        this._resolveDone();
      } else {
        this._error = error;
        this._call("error", error);
        this._rejectDone(error);
      }
    } finally {
      this._ended = true;
      this._unlisten?.();
      this._wake();
      this._call("close");
    }
  }

  _call(name, ...args) {
    const fn = this._on[name];
    if (!fn) return;
    try {
      fn(...args);
    } catch (error) {
      // A callback's own bug must not kill the stream silently; report it.
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  _safeToRepeat() {
    return this.method === "GET" || this._eventsUrl !== null || this._resend;
  }

  _nextRequest() {
    const headers = new Headers(this._headers);
    headers.set("accept", "text/event-stream");
    headers.set("cache-control", "no-cache");
    if (this._lastId) headers.set("last-event-id", this._lastId);
    let method = this.method;
    let url = this.url;
    let body = this._body;
    if (this._eventsUrl !== null) {
      method = "GET";
      url = this._eventsUrl;
      body = null;
      headers.delete("content-type");
    }
    const sameOrigin = originOf(url) === originOf(this.url) || this._trusted.has(originOf(url));
    let credentials = this._credentials;
    if (!sameOrigin) {
      for (const name of CREDENTIAL_HEADERS) headers.delete(name);
      credentials = "same-origin";
    }
    const init = { method, headers, signal: null, cache: "no-store" };
    if (body !== null) init.body = body;
    if (credentials !== undefined) init.credentials = credentials;
    return { url, init };
  }

  /** One connection. Returns the delay (ms) before the next, or null to stop; throws to fail. */
  async _attempt() {
    const { url, init } = this._nextRequest();
    const attempt = new AbortController();
    const onAbort = () => attempt.abort();
    this._abort.signal.addEventListener("abort", onAbort, { once: true });
    init.signal = attempt.signal;
    try {
      let response;
      try {
        response = await this._fetch(url, init);
      } catch (cause) {
        if (this._closed) return null;
        const error = new NetworkError(`could not fetch ${init.method} ${url}: ${cause?.message ?? cause}`, { cause });
        // A request refused before it was sent may go again, even a POST.
        const notSent = cause?.cause?.code === "ECONNREFUSED";
        if (!this._reconnect || (!notSent && !this._safeToRepeat())) throw error;
        return this._retryDelay(error);
      }
      return await this._handle(response, url, init, attempt);
    } finally {
      this._abort.signal.removeEventListener("abort", onAbort);
      attempt.abort();
    }
  }

  async _handle(response, url, init, attempt) {
    this._status = response.status;
    this._response = response;
    const status = response.status;
    if (status === 204) {
      // The server's way to say "do not reconnect" (HTML § 9.2.3).
      this._finished = true;
      return null;
    }
    if (status >= 200 && status < 300) {
      const contentType = response.headers.get("content-type");
      if (!isEventStream(contentType)) {
        const body = await readSome(response);
        throw new ProtocolError(
          `expected an event stream (text/event-stream) from ${init.method} ${url}, ` +
            `got status ${status} with content type ${JSON.stringify(contentType ?? "")}`,
          { status, contentType, body, headers: response.headers },
        );
      }
      return await this._read(response, url, init, attempt);
    }
    if (this._reconnect && RETRY_STATUSES(status) && (this._safeToRepeat() || NOT_PROCESSED.has(status))) {
      await response.body?.cancel().catch(() => {});
      const after = parseRetryAfter(response.headers.get("retry-after"), this._now());
      if (after !== null) this._retryAfterMs = after;
      const error = new HTTPError(`${init.method} ${url} answered ${status}`, {
        status,
        headers: response.headers,
        url,
      });
      return this._retryDelay(error);
    }
    const body = await readSome(response);
    const snippet = body.slice(0, 200).trim();
    throw new HTTPError(
      `${init.method} ${url} answered ${status} ${response.statusText ?? ""}`.trimEnd() +
        " instead of an event stream" +
        (snippet ? `: ${snippet}` : ""),
      { status, body, headers: response.headers, url },
    );
  }

  async _read(response, url, init, attempt) {
    this._progress = false;
    this._received = 0;
    const id = response.headers.get("x-stream-id");
    if (id && this._streamId === null) this._streamId = id;
    if (this._eventsUrl === null && this.method !== "GET") {
      const link = eventsLink(response.headers.get("link"));
      if (link !== null) {
        try {
          const target = new URL(link, response.url || url);
          if (target.protocol === "http:" || target.protocol === "https:") {
            target.username = "";
            target.password = "";
            this._eventsUrl = target.href;
          }
        } catch {
          // an unusable Link names nothing to resume
        }
      }
    }
    this._call("open", response);
    const decoder = new SSEDecoder({ lastEventId: this._lastId });
    const reader = response.body.getReader();
    let error = null;
    let timer = null;
    const arm = () => {
      if (this._readTimeoutMs == null) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        error = new NetworkError(
          `no data from ${init.method} ${url} for ${this._readTimeoutMs} ms (not even a keep-alive comment)`,
        );
        attempt.abort();
      }, this._readTimeoutMs);
    };
    try {
      arm();
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (cause) {
          if (!error) error = new NetworkError(`connection to ${init.method} ${url} broke: ${cause?.message ?? cause}`, { cause });
          break;
        }
        if (chunk.done) break;
        arm();
        const events = decoder.feed(chunk.value);
        this._lastId = decoder.lastEventId;
        if (decoder.retry !== null) this._retryMs = decoder.retry;
        for (const ev of events) {
          if (this._closed) break;
          // An `error` event is not progress: a stream that opens only to
          // report a failure counts against the cap like one that never opened.
          if (ev.event !== "error") this._progress = true;
          this._received++;
          const stop = this._stopAt !== null && this._stopAt(ev);
          if (!(stop && ev.data === "[DONE]")) this._deliver(ev);
          if (stop) {
            this._finished = true;
            break;
          }
        }
        if (this._closed || this._finished) break;
        if (this._buffer && this._queue.length > HIGH_WATER) await this._drain();
      }
    } finally {
      clearTimeout(timer);
      decoder.close();
      reader.cancel().catch(() => {});
    }
    if (this._closed || this._finished) return null;
    return this._endedWith(error);
  }

  _deliver(ev) {
    if (this._buffer) {
      this._queue.push(ev);
      this._wake();
    }
    this._call("event", ev);
  }

  /** Back-pressure: an iterator that reads slower than the network pauses the reading. */
  async _drain() {
    await new Promise((resolve) => {
      this._drained = () => {
        this._drained = null;
        resolve();
      };
    });
  }

  _endedWith(error) {
    if (!this._reconnect) {
      if (error) throw error;
      this._finished = true;
      return null;
    }
    if (!this._safeToRepeat()) {
      if (!error) {
        // A POST stream that ended cleanly is an answer that is complete.
        this._finished = true;
        return null;
      }
      throw new NotResumableError(
        `the ${this.method} stream from ${this.url} broke after ${this._received} events and the ` +
          'server named no stream to resume (no Link: <url>; rel="events" header); reconnecting ' +
          "would send the request again (for an LLM, a second paid generation): pass resend: true to allow that",
        { cause: error },
      );
    }
    return this._retryDelay(error);
  }

  /** The wait before the next attempt (ms), as the Python ReconnectPolicy decides it. */
  _retryDelay(error) {
    if (this._progress) {
      this._failures = 0;
      this._progress = false;
    }
    this._failures++;
    if (this._maxAttempts !== null && this._failures > this._maxAttempts) {
      const cause = error ?? new NetworkError("the server kept ending the stream");
      throw new RetryLimitError(`gave up on ${this.url} after ${this._failures} failed attempts: ${cause.message}`, {
        attempts: this._failures,
        cause,
      });
    }
    let delay;
    if (this._retryAfterMs !== null) {
      // The server said when; it knows its own load better than a formula.
      delay = Math.min(this._retryAfterMs, Math.max(this._maxDelayMs, this._retryMs));
      this._retryAfterMs = null;
    } else {
      const backoff = this._retryMs * this._multiplier ** Math.min(this._failures - 1, 64);
      delay = Math.min(this._maxDelayMs, backoff) * (1 - this._jitter * this._random());
    }
    this._call("retry", { attempt: this._failures, delayMs: delay, error });
    return delay;
  }
}

async function readSome(response, limit = MAX_ERROR_BODY) {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const parts = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      size += value.length;
    }
  } catch {
    // what came is what we have
  } finally {
    reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(Math.min(size, limit));
  let at = 0;
  for (const p of parts) {
    const n = Math.min(p.length, bytes.length - at);
    bytes.set(p.subarray(0, n), at);
    at += n;
  }
  return new TextDecoder().decode(bytes);
}
