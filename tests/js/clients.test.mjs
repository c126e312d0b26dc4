// Clients people already have, unchanged, against a real `ssegate serve`:
// the `eventsource` package (topics and /v1/streams, reconnecting with
// Last-Event-ID through a proxy that cuts the connection), the `openai`
// package's streaming chat, a plain fetch reader of the raw stream, the AI
// SDK's UI message stream reader on ?format=aisdk, and ssegate.js itself.
// Auth is on: each client sends the API key its own way.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { EventSource } from "eventsource";
import OpenAI from "openai";
import { parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from "ai";
import { HTTPError, stream } from "../../src/ssegate/gateway/static/ssegate.js";
import { cuttingProxy, ssegateServe, until } from "./gateway.mjs";

// The echo model answers with the prompt, word by word: the exact text to expect.
const PROMPT =
  "Every token of this answer must arrive exactly once and in order, even when the " +
  "connection drops in the middle of the stream and the client has to come back " +
  "for the rest of it: nothing lost, nothing repeated, nothing sent twice upstream.";
const MESSAGES = [{ role: "user", content: PROMPT }];
const KEY = "js-client-key-0123456789";
const AUTH = { authorization: `Bearer ${KEY}` };

let gateway;
before(async () => {
  gateway = await ssegateServe(
    'default_model = "echo"\necho_tokens_per_second = 0\n[local]\npreload = false\n' +
      `[[keys]]\nid = "js"\nkey = "${KEY}"\nscopes = ["chat", "publish", "subscribe:*"]\n`,
  );
});
after(() => gateway?.stop());

async function post(path, body) {
  const response = await fetch(gateway.url + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...AUTH },
    body: JSON.stringify(body),
  });
  assert.ok(response.ok, `${path}: ${response.status} ${await response.clone().text()}`);
  return response.json();
}

function port(url) {
  return Number(new URL(url).port);
}

describe("third-party clients against ssegate serve", { concurrency: true }, () => {
  test("eventsource follows a topic across a cut, resuming with Last-Event-ID", async (t) => {
    const proxy = await cuttingProxy(port(gateway.url));
    t.after(() => proxy.close());
    // A browser's EventSource cannot send headers: the key goes as ?access_token=.
    const es = new EventSource(proxy.url + "/v1/topics/news/js?access_token=" + KEY);
    t.after(() => es.close());
    const got = [];
    es.addEventListener("headline", (e) => got.push([e.data, e.lastEventId]));
    await new Promise((resolve, reject) => {
      es.onopen = resolve;
      es.onerror = reject;
    });
    es.onerror = null;
    const ids = [];
    const publish = async (data) => ids.push((await post("/v1/topics/news/js", { event: "headline", data })).id);
    await publish("one");
    await publish("two");
    await until(() => got.length === 2, "two headlines");
    proxy.cutNow();
    await publish("three"); // while the subscriber is away: it gets it on its return
    await until(() => proxy.requests.length === 2 && es.readyState === es.OPEN, "the reconnection");
    await publish("four");
    await until(() => got.length === 4, "four headlines");
    assert.deepEqual(got, [
      ["one", ids[0]],
      ["two", ids[1]],
      ["three", ids[2]],
      ["four", ids[3]],
    ]);
    assert.equal(proxy.requests[0].headers["last-event-id"], undefined);
    assert.equal(proxy.requests[1].headers["last-event-id"], ids[1]);
  });

  test("eventsource reads /v1/streams/{id} to the end across a cut", async (t) => {
    const { events_url } = await post("/v1/streams", { model: "echo", messages: MESSAGES });
    const proxy = await cuttingProxy(port(gateway.url), { cutAfter: 900 });
    t.after(() => proxy.close());
    const es = new EventSource(proxy.url + events_url + "?access_token=" + KEY);
    t.after(() => es.close());
    let text = "";
    const done = new Promise((resolve) => {
      es.addEventListener("done", (e) => {
        es.close();
        resolve(JSON.parse(e.data));
      });
    });
    es.addEventListener("token", (e) => (text += JSON.parse(e.data).text));
    assert.deepEqual(await done, { finish_reason: "stop" });
    assert.equal(text, PROMPT);
    assert.equal(proxy.requests.length, 2);
    assert.match(proxy.requests[1].headers["last-event-id"], /^\S+-\d+$/);
  });

  test("the openai package streams a chat completion", async () => {
    const client = new OpenAI({ baseURL: gateway.url + "/v1", apiKey: KEY, maxRetries: 0 });
    const chunks = await client.chat.completions.create({
      model: "echo",
      messages: MESSAGES,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish = null;
    let usage = null;
    for await (const chunk of chunks) {
      assert.equal(chunk.object, "chat.completion.chunk");
      const choice = chunk.choices[0];
      if (choice) {
        text += choice.delta.content ?? "";
        finish = choice.finish_reason ?? finish;
      }
      usage = chunk.usage ?? usage;
    }
    assert.equal(text, PROMPT);
    assert.equal(finish, "stop");
    const words = PROMPT.split(" ").length;
    assert.deepEqual(
      [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens],
      [words, words, 2 * words],
    );
  });

  test("a plain fetch reader gets the raw stream, ending in [DONE]", async () => {
    const response = await fetch(gateway.url + "/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", ...AUTH },
      body: JSON.stringify({ model: "echo", messages: MESSAGES, stream: true }),
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type").split(";")[0], "text/event-stream");
    const id = response.headers.get("x-stream-id");
    assert.equal(response.headers.get("link"), `</v1/streams/${id}?format=openai>; rel="events"`);
    // Seed 000's pattern: read, decode, split on blank lines, take the data lines.
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const datas = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of block.split("\n")) if (line.startsWith("data: ")) datas.push(line.slice(6));
      }
    }
    assert.equal(buffer, "");
    assert.equal(datas.at(-1), "[DONE]");
    const text = datas
      .slice(0, -1)
      .map((d) => JSON.parse(d).choices[0]?.delta.content ?? "")
      .join("");
    assert.equal(text, PROMPT);
  });

  test("the AI SDK reads the UI message stream of ?format=aisdk", async () => {
    const { events_url } = await post("/v1/streams", { model: "echo", messages: MESSAGES });
    const response = await fetch(gateway.url + events_url + "?format=aisdk", { headers: AUTH });
    assert.equal(response.headers.get("x-vercel-ai-ui-message-stream"), "v1");
    // As the AI SDK's own chat transport does (HttpChatTransport.processResponseStream).
    const chunks = parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema }).pipeThrough(
      new TransformStream({
        transform(part, controller) {
          if (!part.success) throw part.error;
          controller.enqueue(part.value);
        },
      }),
    );
    let message;
    for await (const m of readUIMessageStream({ stream: chunks })) message = m;
    assert.equal(message.role, "assistant");
    const text = message.parts.filter((p) => p.type === "text");
    assert.deepEqual(
      text.map((p) => [p.text, p.state]),
      [[PROMPT, "done"]],
    );
  });

  test("ssegate.js resumes a cut chat completion by GET on its Link: exact text, one POST", async (t) => {
    const proxy = await cuttingProxy(port(gateway.url), { cutAfter: 1500 });
    t.after(() => proxy.close());
    const retries = [];
    const es = stream(proxy.url + "/v1/chat/completions", {
      method: "POST",
      headers: AUTH,
      body: { model: "echo", messages: MESSAGES, stream: true },
      untilDone: true,
      retry: { initialDelayMs: 50 },
      onRetry: (info) => retries.push(info.error.name),
    });
    let text = "";
    const ids = [];
    for await (const ev of es) {
      text += JSON.parse(ev.data).choices[0]?.delta.content ?? "";
      ids.push(ev.id);
    }
    assert.equal(text, PROMPT);
    assert.equal(new Set(ids).size, ids.length); // nothing repeated
    assert.deepEqual(retries, ["NetworkError"]);
    assert.deepEqual(
      proxy.requests.map((r) => [r.method, r.path]),
      [
        ["POST", "/v1/chat/completions"],
        ["GET", `/v1/streams/${es.streamId}?format=openai`],
      ],
    );
    // Resumed after the last event received before the cut, mid-answer.
    const resumedAfter = ids.indexOf(proxy.requests[1].headers["last-event-id"]);
    assert.ok(resumedAfter > 0 && resumedAfter < ids.length - 2, `resumed after event ${resumedAfter}`);
  });

  test("ssegate.js follows a POST /v1/streams generation across a cut", async (t) => {
    const { id, events_url } = await post("/v1/streams", { model: "echo", messages: MESSAGES });
    const proxy = await cuttingProxy(port(gateway.url), { cutAfter: 900 });
    t.after(() => proxy.close());
    const events = [];
    const es = stream(proxy.url + events_url, { headers: AUTH, untilDone: true, retry: { initialDelayMs: 50 } });
    for await (const ev of es) events.push(ev);
    assert.equal(
      events
        .filter((e) => e.event === "token")
        .map((e) => JSON.parse(e.data).text)
        .join(""),
      PROMPT,
    );
    assert.deepEqual(events.at(-1).event, "done");
    assert.equal(new Set(events.map((e) => e.id)).size, events.length); // nothing repeated
    assert.deepEqual(
      proxy.requests.map((r) => r.path),
      [`/v1/streams/${id}`, `/v1/streams/${id}`],
    );
    const resumedAfter = events.findIndex((e) => e.id === proxy.requests[1].headers["last-event-id"]);
    assert.ok(resumedAfter > 0 && resumedAfter < events.length - 2, `resumed after event ${resumedAfter}`);
  });
});

test("ssegate.js without the key: a 401 HTTPError naming the problem, not retried", async () => {
  const retries = [];
  const es = stream(gateway.url + "/v1/chat/completions", {
    method: "POST",
    body: { model: "echo", messages: MESSAGES, stream: true },
    onRetry: () => retries.push(1),
  });
  const error = await es.done.then(
    () => null,
    (e) => e,
  );
  assert.ok(error instanceof HTTPError, String(error));
  assert.equal(error.status, 401);
  assert.equal(error.headers.get("content-type"), "application/json");
  assert.equal(JSON.parse(error.body).error.code, "missing_api_key");
  assert.deepEqual(retries, []);
});

test("examples/node_client.mjs prints the answer", async () => {
  const { execFile } = await import("node:child_process");
  const script = new URL("../../examples/node_client.mjs", import.meta.url).pathname;
  const env = { ...process.env, SSEGATE_API_KEY: KEY };
  const stdout = await new Promise((resolve, reject) =>
    execFile(process.execPath, [script, gateway.url, PROMPT], { env, timeout: 30_000 }, (error, out, err) =>
      error ? reject(new Error(`${error.message}: ${err}`)) : resolve(out),
    ),
  );
  assert.equal(stdout, PROMPT + "\n");
});
