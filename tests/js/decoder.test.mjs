// SSEDecoder on the spec cases shared with the Python decoder's tests
// (tests/data/sse_spec_cases.json): each fed whole, byte by byte, split at
// every position, and as text; plus what the cases cannot say.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { SSEDecoder } from "../../src/ssegate/gateway/static/ssegate.js";

const { cases } = JSON.parse(readFileSync(new URL("../data/sse_spec_cases.json", import.meta.url), "utf8"));

function bytesOf(c) {
  return c.stream_base64 !== undefined
    ? new Uint8Array(Buffer.from(c.stream_base64, "base64"))
    : new TextEncoder().encode(c.stream);
}

function run(chunks) {
  const d = new SSEDecoder();
  const events = [];
  for (const chunk of chunks) events.push(...d.feed(chunk));
  events.push(...d.close());
  return { events, lastEventId: d.lastEventId, retry: d.retry };
}

function check(c, got, how) {
  assert.deepEqual(got, { events: c.events, lastEventId: c.last_event_id, retry: c.retry }, `${c.name} (${how})`);
}

test("the shared cases are all there", () => {
  assert.equal(cases.length, 72);
});

for (const c of cases) {
  test(c.name, () => {
    const bytes = bytesOf(c);
    check(c, run([bytes]), "whole");
    check(c, run(Array.from(bytes, (_, i) => bytes.subarray(i, i + 1))), "byte by byte");
    for (let at = 0; at <= bytes.length; at++) {
      check(c, run([bytes.subarray(0, at), bytes.subarray(at)]), `split at ${at}`);
    }
    if (c.stream !== undefined) {
      // Text in: the same, whole and one UTF-16 unit at a time.
      check(c, run([c.stream]), "text");
      check(c, run(Array.from(c.stream, (ch) => ch)), "text by character");
    }
  });
}

test("events arrive as soon as their blank line does", () => {
  const d = new SSEDecoder();
  const ev = (data) => ({ data, event: "message", id: "", retry: null });
  assert.deepEqual(d.feed("data: a\n"), []);
  assert.deepEqual(d.feed("\n"), [ev("a")]);
  assert.deepEqual(d.feed("data: b\r"), []);
  assert.deepEqual(d.feed("\r"), [ev("b")]);
  assert.deepEqual(d.feed("data: c\r\n\r"), [ev("c")]);
  assert.deepEqual(d.feed("\ndata: d\n\n"), [ev("d")]);
});

test("a BOM split across chunks is dropped", () => {
  const d = new SSEDecoder();
  assert.deepEqual(d.feed(new Uint8Array([0xef])), []);
  assert.deepEqual(d.feed(new Uint8Array([0xbb])), []);
  assert.deepEqual(d.feed(new TextEncoder().encode("\ufeffdata: a\n\n").subarray(2)), [
    { data: "a", event: "message", id: "", retry: null },
  ]);
});

test("the initial last event id carries into events", () => {
  const d = new SSEDecoder({ lastEventId: "41" });
  assert.deepEqual(d.feed("data: a\n\nid: 42\ndata: b\n\n"), [
    { data: "a", event: "message", id: "41", retry: null },
    { data: "b", event: "message", id: "42", retry: null },
  ]);
  assert.equal(d.lastEventId, "42");
  assert.throws(() => new SSEDecoder({ lastEventId: "a\nb" }), TypeError);
});

test("close is idempotent and feed after close is refused", () => {
  const d = new SSEDecoder();
  assert.deepEqual(d.close(), []);
  assert.deepEqual(d.close(), []);
  assert.throws(() => d.feed("data: a\n\n"), /after close/);
  assert.throws(() => new SSEDecoder().feed(42), TypeError);
});

test("a line over the limit is a ProtocolError", async () => {
  const { ProtocolError } = await import("../../src/ssegate/gateway/static/ssegate.js");
  const d = new SSEDecoder({ maxEventSize: 10 });
  assert.throws(() => d.feed("data: " + "x".repeat(2000)), ProtocolError);
  const e = new SSEDecoder({ maxEventSize: 10 });
  assert.throws(() => e.feed("data: 123456\ndata: 123456\n"), ProtocolError);
});
