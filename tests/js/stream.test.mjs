// The stream client against real HTTP servers on 127.0.0.1 (node:http), with
// an injected sleep so back-off and Retry-After cost no real time.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  HTTPError,
  NotResumableError,
  ProtocolError,
  RetryLimitError,
  stream,
} from "../../src/ssegate/gateway/static/ssegate.js";
import { answer, collect, ev, fakeSleep, scripted, sse } from "./server.mjs";

test("a GET reconnects after a cut with Last-Event-ID and the server's retry", async (t) => {
  const server = await scripted([
    sse("retry: 1234\nid: 1\ndata: a\n\n", { cut: true }),
    sse("id: 2\ndata: b\n\n"),
    answer(204),
  ]);
  t.after(() => server.close());
  const { delays, sleep } = fakeSleep();
  const es = stream(server.url + "/events", { sleep, random: () => 0 });
  assert.deepEqual(await collect(es), [ev("a", "message", "1", 1234), ev("b", "message", "2")]);
  assert.deepEqual(
    server.requests.map((r) => [r.method, r.url, r.headers["last-event-id"]]),
    [
      ["GET", "/events", undefined],
      ["GET", "/events", "1"],
      ["GET", "/events", "2"],
    ],
  );
  assert.equal(server.requests[0].headers.accept, "text/event-stream");
  // After a cut and after a clean end: the server's retry, no back-off (each connection made progress).
  assert.deepEqual(delays, [1234, 1234]);
  assert.equal(es.lastEventId, "2");
  assert.equal(es.status, 204);
});

test("a POST stream is resumed by GET on its Link, the POST sent exactly once", async (t) => {
  const headers = { "x-stream-id": "s1", link: '</v1/streams/s1?format=openai>; rel="events"' };
  const server = await scripted([
    sse("id: 1\ndata: a\n\n", { cut: true, headers }),
    sse("id: 2\ndata: b\n\nid: 3\nevent: done\ndata: {}\n\n"),
  ]);
  t.after(() => server.close());
  const { sleep } = fakeSleep();
  const es = stream(server.url + "/v1/chat/completions", {
    method: "POST",
    headers: { authorization: "Bearer k" },
    body: { model: "echo", stream: true },
    untilDone: true,
    sleep,
  });
  assert.deepEqual(await collect(es), [
    ev("a", "message", "1"),
    ev("b", "message", "2"),
    ev("{}", "done", "3"),
  ]);
  const [post, get] = server.requests;
  assert.equal(server.requests.length, 2);
  assert.equal(server.requests.filter((r) => r.method === "POST").length, 1);
  assert.deepEqual([post.method, post.url, post.body], ["POST", "/v1/chat/completions", '{"model":"echo","stream":true}']);
  assert.equal(post.headers["content-type"], "application/json");
  assert.deepEqual(
    [get.method, get.url, get.body, get.headers["content-type"], get.headers["last-event-id"], get.headers.authorization],
    ["GET", "/v1/streams/s1?format=openai", "", undefined, "1", "Bearer k"],
  );
  assert.equal(es.streamId, "s1");
  assert.equal(es.eventsUrl, server.url + "/v1/streams/s1?format=openai");
});

test("credentials do not follow a Link to another origin", async (t) => {
  const other = await scripted([sse("id: 2\nevent: done\ndata: {}\n\n")]);
  t.after(() => other.close());
  // Same host and scheme, other port: another origin.
  const server = await scripted([
    sse("id: 1\ndata: a\n\n", { cut: true, headers: { link: `<${other.url}/s/1>; rel="events"` } }),
  ]);
  t.after(() => server.close());
  const { sleep } = fakeSleep();
  const es = stream(server.url + "/start", {
    method: "POST",
    headers: { authorization: "Bearer secret", cookie: "a=b", "x-custom": "kept" },
    body: "prompt",
    untilDone: true,
    sleep,
  });
  assert.deepEqual((await collect(es)).map((e) => e.id), ["1", "2"]);
  assert.equal(server.requests[0].headers.authorization, "Bearer secret");
  const resumed = other.requests[0];
  assert.equal(resumed.method, "GET");
  assert.equal(resumed.headers.authorization, undefined);
  assert.equal(resumed.headers.cookie, undefined);
  assert.equal(resumed.headers["x-custom"], "kept");
  assert.equal(resumed.headers["last-event-id"], "1");
});

test("trustedOrigins lets credentials follow the Link there", async (t) => {
  const other = await scripted([sse("event: done\ndata: {}\n\n")]);
  t.after(() => other.close());
  const server = await scripted([
    sse("id: 1\ndata: a\n\n", { cut: true, headers: { link: `<${other.url}/s/1>; rel="events"` } }),
  ]);
  t.after(() => server.close());
  const es = stream(server.url + "/start", {
    method: "POST",
    headers: { authorization: "Bearer secret" },
    body: "x",
    untilDone: true,
    trustedOrigins: [other.url],
    sleep: fakeSleep().sleep,
  });
  await es.done;
  assert.equal(other.requests[0].headers.authorization, "Bearer secret");
});

test("a POST that breaks without a Link is not sent again", async (t) => {
  const server = await scripted([sse("data: a\n\n", { cut: true })]);
  t.after(() => server.close());
  const seen = [];
  const closes = [];
  const es = stream(server.url + "/gen", {
    method: "POST",
    body: "x",
    onEvent: (e) => seen.push(e.data),
    onError: (e) => seen.push(e.name),
    onClose: () => closes.push(1),
    sleep: fakeSleep().sleep,
  });
  await assert.rejects(es.done, NotResumableError);
  assert.deepEqual(seen, ["a", "NotResumableError"]);
  assert.deepEqual(closes, [1]);
  assert.equal(server.requests.length, 1);
});

test("a POST stream that ends cleanly is complete: no second request", async (t) => {
  const server = await scripted([sse("data: a\n\n")]);
  t.after(() => server.close());
  const es = stream(server.url + "/gen", { method: "POST", body: "x" });
  assert.deepEqual(await collect(es), [ev("a")]);
  assert.equal(server.requests.length, 1);
});

test("retries stop at the cap, with exponential back-off", async (t) => {
  const server = await scripted([answer(503, "busy")]);
  t.after(() => server.close());
  const { delays, sleep } = fakeSleep();
  const retries = [];
  const es = stream(server.url + "/e", {
    retry: { maxAttempts: 3, initialDelayMs: 1000, maxDelayMs: 3000 },
    sleep,
    random: () => 0,
    onRetry: (info) => retries.push([info.attempt, info.error.status]),
  });
  const error = await es.done.then(
    () => null,
    (e) => e,
  );
  assert.ok(error instanceof RetryLimitError);
  assert.equal(error.attempts, 4);
  assert.equal(error.cause.status, 503);
  assert.equal(server.requests.length, 4);
  assert.deepEqual(delays, [1000, 2000, 3000]);
  assert.deepEqual(retries, [
    [1, 503],
    [2, 503],
    [3, 503],
  ]);
});

test("a 4xx is not retried and the error carries status, body and headers", async (t) => {
  for (const status of [400, 401, 403, 404]) {
    const server = await scripted([
      answer(status, '{"error": {"message": "no"}}', { "content-type": "application/json", "x-why": "test" }),
    ]);
    const es = stream(server.url + "/e", { sleep: fakeSleep().sleep });
    const error = await collect(es).then(
      () => null,
      (e) => e,
    );
    await server.close();
    assert.ok(error instanceof HTTPError, String(error));
    assert.equal(error.status, status);
    assert.equal(error.body, '{"error": {"message": "no"}}');
    assert.equal(error.headers.get("x-why"), "test");
    assert.equal(server.requests.length, 1);
  }
});

test("408 and 429 are retried; Retry-After is obeyed, in seconds or as a date", async (t) => {
  const now = Date.parse("Sun, 29 Nov 2026 12:00:00 GMT");
  const server = await scripted([
    answer(429, "", { "retry-after": "7" }),
    answer(408, "", { "retry-after": "Sun, 29 Nov 2026 12:00:02 GMT" }),
    answer(503, "", { "retry-after": "99999999" }),
    sse("data: a\n\n"),
    answer(204),
  ]);
  t.after(() => server.close());
  const { delays, sleep } = fakeSleep();
  const es = stream(server.url + "/e", { sleep, now: () => now, random: () => 0, retry: { maxDelayMs: 60_000 } });
  assert.deepEqual(await collect(es), [ev("a")]);
  // 7 s, the date 2 s ahead, a huge value capped at maxDelayMs; then the clean end's retry.
  assert.deepEqual(delays, [7000, 2000, 60_000, 3000]);
});

test("a POST is retried after 429 (not processed) but not after 500", async (t) => {
  const server = await scripted([answer(429, "", { "retry-after": "1" }), answer(500, "oops")]);
  t.after(() => server.close());
  const { delays, sleep } = fakeSleep();
  const es = stream(server.url + "/gen", { method: "POST", body: "x", sleep });
  const error = await es.done.then(
    () => null,
    (e) => e,
  );
  assert.ok(error instanceof HTTPError);
  assert.deepEqual([error.status, error.body], [500, "oops"]);
  assert.deepEqual(delays, [1000]);
  assert.equal(server.requests.length, 2);
});

test("a response that is not text/event-stream is a ProtocolError", async (t) => {
  const server = await scripted([answer(200, "<html>hi</html>", { "content-type": "text/html" })]);
  t.after(() => server.close());
  const es = stream(server.url + "/e");
  await assert.rejects(collect(es), (e) => {
    assert.ok(e instanceof ProtocolError);
    assert.deepEqual([e.status, e.contentType, e.body], [200, "text/html", "<html>hi</html>"]);
    return true;
  });
  assert.equal(server.requests.length, 1);
});

test("abort mid-stream fires onClose exactly once, and no error", async (t) => {
  let open;
  const opened = new Promise((r) => (open = r));
  const server = await scripted([
    (req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: a\n\n");
      open();
    },
  ]);
  t.after(() => server.close());
  const controller = new AbortController();
  const calls = [];
  const es = stream(server.url + "/e", {
    signal: controller.signal,
    onEvent: (e) => calls.push(`event ${e.data}`),
    onError: (e) => calls.push(`error ${e}`),
    onClose: () => calls.push("close"),
  });
  await opened;
  while (!calls.length) await new Promise((r) => setTimeout(r, 5));
  controller.abort();
  await es.done;
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(calls, ["event a", "close"]);
  assert.equal(server.requests.length, 1);
});

test("a signal aborted before the start sends nothing and still closes once", async (t) => {
  const server = await scripted([sse("data: a\n\n")]);
  t.after(() => server.close());
  const calls = [];
  const es = stream(server.url + "/e", { signal: AbortSignal.abort(), onClose: () => calls.push("close") });
  assert.deepEqual(await collect(es), []);
  await es.done;
  assert.deepEqual(calls, ["close"]);
  assert.equal(server.requests.length, 0);
});

test("close during the back-off wait ends it at once", async (t) => {
  const server = await scripted([answer(503)]);
  t.after(() => server.close());
  const calls = [];
  const es = stream(server.url + "/e", {
    retry: { initialDelayMs: 60_000 },
    onRetry: () => setTimeout(() => es.close(), 10),
    onClose: () => calls.push("close"),
  });
  const started = Date.now();
  await es.done;
  assert.ok(Date.now() - started < 5000);
  assert.deepEqual(calls, ["close"]);
  assert.equal(server.requests.length, 1);
});

test("breaking out of a for-await loop closes the connection", async (t) => {
  let closed;
  const gone = new Promise((r) => (closed = r));
  const server = await scripted([
    (req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: a\n\ndata: b\n\n");
      res.on("close", closed);
    },
  ]);
  t.after(() => server.close());
  const calls = [];
  const es = stream(server.url + "/e", { onClose: () => calls.push("close") });
  const seen = [];
  for await (const e of es) {
    seen.push(e.data);
    break;
  }
  await gone; // the server saw the client go
  await es.done;
  assert.deepEqual(seen, ["a"]);
  assert.deepEqual(calls, ["close"]);
});

test("204 stops without reconnecting; a read timeout counts as a drop", async (t) => {
  const server = await scripted([
    (req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("id: 7\ndata: a\n\n"); // then silence
    },
    answer(204),
  ]);
  t.after(() => server.close());
  const retries = [];
  const es = stream(server.url + "/e", {
    readTimeoutMs: 100,
    sleep: fakeSleep().sleep,
    onRetry: (info) => retries.push(info.error.name),
  });
  assert.deepEqual(await collect(es), [ev("a", "message", "7")]);
  assert.deepEqual(retries, ["NetworkError"]);
  assert.equal(server.requests[1].headers["last-event-id"], "7");
});

test("a GET cannot carry a body and Last-Event-ID goes by option", () => {
  assert.throws(() => stream("http://127.0.0.1:9/e", { body: "x" }), TypeError);
  assert.throws(() => stream("http://127.0.0.1:9/e", { headers: { "Last-Event-ID": "1" } }), TypeError);
  assert.throws(() => stream("ftp://127.0.0.1/e"), TypeError);
});

test("an iterator slower than the network gets every event, in order", async (t) => {
  const n = 3000;
  let body = "";
  for (let i = 0; i < n; i++) body += `id: ${i}\ndata: ${i}\n\n`;
  const server = await scripted([sse(body), answer(204)]);
  t.after(() => server.close());
  const es = stream(server.url + "/e", { sleep: fakeSleep().sleep });
  const seen = [];
  for await (const e of es) {
    seen.push(Number(e.data));
    if (seen.length % 500 === 0) await new Promise((r) => setTimeout(r, 20)); // a slow consumer
  }
  assert.deepEqual(
    seen,
    Array.from({ length: n }, (_, i) => i),
  );
  assert.equal(server.requests[1].headers["last-event-id"], String(n - 1));
});

test("a hidden tab changes nothing: no listener, no new request", async (t) => {
  // A stand-in for the browser's document: ssegate.js must not react to it.
  const document = new EventTarget();
  document.visibilityState = "visible";
  globalThis.document = document;
  t.after(() => delete globalThis.document);
  const server = await scripted([
    (req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: a\n\n");
    },
  ]);
  t.after(() => server.close());
  const seen = [];
  const es = stream(server.url + "/e", { onEvent: (e) => seen.push(e.data) });
  await new Promise((r) => setTimeout(r, 50));
  for (const state of ["hidden", "visible", "hidden", "visible"]) {
    document.visibilityState = state;
    document.dispatchEvent(new Event("visibilitychange"));
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(seen, ["a"]);
  assert.equal(server.requests.length, 1);
  assert.equal(es.closed, false);
  es.close();
  await es.done;
});

test("a relative Link resolves against the response URL", async (t) => {
  const server = await scripted([
    sse("id: 1\ndata: a\n\n", { cut: true, headers: { link: '<../streams/9?f=1>; rel="events"' } }),
    sse("event: done\ndata: {}\n\n"),
  ]);
  t.after(() => server.close());
  const es = stream(server.url + "/api/v1/chat", {
    method: "POST",
    body: "x",
    untilDone: true,
    sleep: fakeSleep().sleep,
  });
  await es.done;
  assert.equal(es.eventsUrl, server.url + "/api/streams/9?f=1");
  assert.deepEqual(
    server.requests.map((r) => [r.method, r.url]),
    [
      ["POST", "/api/v1/chat"],
      ["GET", "/api/streams/9?f=1"],
    ],
  );
});

test("a Link that is not http(s) names nothing to resume", async (t) => {
  const server = await scripted([sse("data: a\n\n", { cut: true, headers: { link: '<javascript:alert(1)>; rel="events"' } })]);
  t.after(() => server.close());
  const es = stream(server.url + "/gen", { method: "POST", body: "x", sleep: fakeSleep().sleep });
  await assert.rejects(es.done, NotResumableError);
  assert.equal(es.eventsUrl, null);
  assert.equal(server.requests.length, 1);
});
