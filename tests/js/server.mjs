// A scripted HTTP server for the stream client's tests: each request is
// answered by the next handler of a list, and every request is recorded.
import http from "node:http";

export { stream, SSEDecoder } from "../../src/ssegate/gateway/static/ssegate.js";

/**
 * Start a server on 127.0.0.1. `handlers[i](req, res, body)` answers the
 * i-th request (the last one answers any further). Returns {url, requests, close}.
 */
export async function scripted(handlers) {
  const requests = [];
  const sockets = new Set();
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks).toString();
    requests.push({ method: req.method, url: req.url, headers: req.headers, body });
    const handler = handlers[Math.min(requests.length - 1, handlers.length - 1)];
    await handler(req, res, body);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    requests,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A handler that sends an event stream of `text` and then, if `cut`, destroys the socket. */
export function sse(text, { cut = false, headers = {} } = {}) {
  return (req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream", ...headers });
    res.write(text);
    if (cut) {
      // Let the bytes reach the client first, then break the connection.
      setTimeout(() => res.socket.destroy(), 20);
    } else {
      res.end();
    }
  };
}

/** A handler answering `status` with a body and headers. */
export function answer(status, body = "", headers = {}) {
  return (req, res) => {
    res.writeHead(status, headers);
    res.end(body);
  };
}

/** Collect every event of an EventStream by async iteration. */
export async function collect(es) {
  const out = [];
  for await (const ev of es) out.push(ev);
  return out;
}

/** A sleep that records the delays asked for and does not wait. */
export function fakeSleep() {
  const delays = [];
  const sleep = async (ms) => {
    delays.push(ms);
  };
  return { delays, sleep };
}

export function ev(data, event = "message", id = "", retry = null) {
  return { data, event, id, retry };
}
