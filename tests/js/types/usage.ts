// Compiled by tests/js/types.test.mjs with tsc --strict --noEmit: ssegate.d.ts
// must describe the module as people use it.
import {
  EventStream,
  HTTPError,
  NotResumableError,
  ProtocolError,
  RetryLimitError,
  SSEDecoder,
  type SSEEvent,
  stream,
} from "../../../src/ssegate/gateway/static/ssegate.js";

const decoder = new SSEDecoder({ lastEventId: "1" });
const events: SSEEvent[] = [...decoder.feed(new Uint8Array([100])), ...decoder.feed("data: x\n\n"), ...decoder.close()];
const retry: number | null = decoder.retry;
const id: string = events[0]?.id ?? decoder.lastEventId;

const es: EventStream = stream("http://127.0.0.1:8000/v1/chat/completions", {
  method: "POST",
  headers: { authorization: "Bearer k" },
  body: { model: "echo", messages: [{ role: "user", content: "hi" }], stream: true },
  signal: new AbortController().signal,
  lastEventId: id,
  retry: { maxAttempts: 3, initialDelayMs: 500, maxDelayMs: 10_000 },
  untilDone: true,
  onOpen: (response: Response) => response.headers.get("x-stream-id"),
  onEvent: (ev) => ev.data.length,
  onError: (error) => {
    if (error instanceof HTTPError) console.log(error.status, error.body, error.headers.get("retry-after"));
    else if (error instanceof ProtocolError) console.log(error.contentType);
    else if (error instanceof RetryLimitError) console.log(error.attempts);
    else if (error instanceof NotResumableError) console.log(error.message);
  },
  onClose: () => undefined,
  fetch: globalThis.fetch,
  sleep: async (_ms: number, _signal: AbortSignal) => undefined,
});

async function main(): Promise<string> {
  let text = "";
  for await (const ev of es) text += ev.data + (ev.retry ?? 0) + ev.event;
  await es.done;
  es.close();
  return `${text}${es.streamId ?? ""}${es.eventsUrl ?? ""}${es.lastEventId}${retry}`;
}
void main();
