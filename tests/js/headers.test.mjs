// The header readers of ssegate.js: Link rel="events", Retry-After, Content-Type.
import { test } from "node:test";
import assert from "node:assert/strict";
import { eventsLink, isEventStream, isTerminal, parseRetryAfter } from "../../src/ssegate/gateway/static/ssegate.js";

test("the rel=events link is found among others, quoted or not, in any case", () => {
  assert.equal(eventsLink('</v1/streams/a?format=openai>; rel="events"'), "/v1/streams/a?format=openai");
  assert.equal(eventsLink('<https://x/next>; rel="next", <../s/1>; rel=events'), "../s/1");
  assert.equal(eventsLink('<a>; title="x"; rel="alternate EVENTS"'), "a");
  assert.equal(eventsLink('<a>; rel="next"'), null);
  assert.equal(eventsLink('<a>; rel="eventsource"'), null);
  assert.equal(eventsLink(""), null);
  assert.equal(eventsLink(null), null);
});

test("Retry-After: seconds or an HTTP date, capped at a day, else null", () => {
  const now = Date.parse("2026-11-29T12:00:00Z");
  assert.equal(parseRetryAfter("0", now), 0);
  assert.equal(parseRetryAfter(" 120 ", now), 120_000);
  assert.equal(parseRetryAfter("9".repeat(400), now), 86_400_000);
  assert.equal(parseRetryAfter("Sun, 29 Nov 2026 12:00:30 GMT", now), 30_000);
  assert.equal(parseRetryAfter("Sun, 29 Nov 2026 11:00:00 GMT", now), 0); // in the past
  for (const bad of ["-5", "1.5", "soon", "", null, undefined]) assert.equal(parseRetryAfter(bad, now), null, String(bad));
});

test("Content-Type text/event-stream, parameters and case aside", () => {
  assert.ok(isEventStream("text/event-stream"));
  assert.ok(isEventStream("Text/Event-Stream; charset=utf-8"));
  for (const other of ["text/plain", "application/json", "", null, "text/event-streams"]) assert.ok(!isEventStream(other));
});

test("terminal events: [DONE], done, error, close", () => {
  const ev = (data, event = "message") => ({ data, event, id: "", retry: null });
  assert.ok(isTerminal(ev("[DONE]")));
  for (const type of ["done", "error", "close"]) assert.ok(isTerminal(ev("{}", type)));
  assert.ok(!isTerminal(ev("{}", "token")));
  assert.ok(!isTerminal(ev(" [DONE]")));
});
