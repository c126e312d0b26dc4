// The Node share of the chaos test: read each stream with ssegate.js's stream()
// (through the cutting proxy), reconnecting with Last-Event-ID, all at once.
// stdin: [{url, method?, body?}]; stdout: [{events: [{event, data, id}], connections, error}].
import { stream } from "../../src/ssegate/gateway/static/ssegate.js";

const terminal = (ev) => ev.data === "[DONE]" || ev.event === "done" || ev.event === "error";

async function read(job) {
  const out = { events: [], connections: 0, error: null };
  const es = stream(job.url, {
    method: job.method ?? "GET",
    body: job.body ?? null,
    retry: { initialDelayMs: 20, maxDelayMs: 500, maxAttempts: 30 },
    onOpen: () => {
      out.connections += 1;
    },
  });
  try {
    for await (const ev of es) {
      out.events.push({ event: ev.event, data: ev.data, id: ev.id });
      if (terminal(ev)) break;
    }
  } catch (error) {
    out.error = String(error);
  } finally {
    es.close();
  }
  return out;
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = await Promise.all(JSON.parse(input).map(read));
process.stdout.write(JSON.stringify(results));
