// SSEDecoder against the Python ssegate.Decoder on random streams built from
// the pieces the spec cares about (line ends, BOM, NUL, colons, field names,
// digits, split UTF-8, invalid bytes), each cut into random chunks: both must
// give the same events, last event id and retry. Seeded: a failure repeats.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { SSEDecoder } from "../../src/ssegate/gateway/static/ssegate.js";
import { PYTHON } from "./gateway.mjs";

const enc = (s) => [...new TextEncoder().encode(s)];
const PIECES = [
  // (Some pieces are listed twice or more: they are drawn that much more often.)
  ...["data", "data:", "data: ", "data: ", "data: ", "data:", "\n", "\n", "\n\n", "id:", "id: ", "event:", "event: ", "retry:", "retry: ", "Data:", "foo:", ":"].map(enc),
  ...["\n", "\r", "\r\n", "\n\n", "\r\r", "\n\r", "\n", "\r\n\r\n", "data: x\n\n", " ", "x", "hello", "0", "12", "007", "a:b", "[DONE]", "é", "🙂"].map(enc),
  [0], // NUL
  [0xef, 0xbb, 0xbf], // BOM
  [0xff], // never valid UTF-8
  [0xe4, 0xb8], // a sequence cut short
  [0xf0, 0x9f], // the first half of an emoji
];

function rng(seed) {
  // mulberry32
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function streams(count, seed) {
  const random = rng(seed);
  const pick = (n) => Math.floor(random() * n);
  const out = [];
  for (let i = 0; i < count; i++) {
    const bytes = [];
    for (let n = 1 + pick(60); n > 0; n--) bytes.push(...PIECES[pick(PIECES.length)]);
    const cuts = [];
    for (let at = 0; at < bytes.length; at++) if (random() < 0.15) cuts.push(at);
    out.push({ bytes: Uint8Array.from(bytes), cuts });
  }
  return out;
}

function chunks({ bytes, cuts }) {
  const edges = [0, ...cuts, bytes.length];
  return edges.slice(1).map((end, i) => bytes.subarray(edges[i], end));
}

const PY = `
import base64, json, sys
from ssegate import Decoder
out = []
for case in json.load(sys.stdin):
    d = Decoder()
    events = []
    for chunk in case:
        events += d.feed(base64.b64decode(chunk))
    events += d.close()
    out.append({"events": [{"data": e.data, "event": e.event, "id": e.id, "retry": e.retry} for e in events],
                "lastEventId": d.last_event_id, "retry": d.retry})
json.dump(out, sys.stdout)
`;

test("the JS and Python decoders agree on 400 random streams in random chunks", async () => {
  const cases = streams(400, 20261129);
  const input = JSON.stringify(cases.map((c) => chunks(c).map((b) => Buffer.from(b).toString("base64"))));
  const python = await new Promise((resolve, reject) => {
    const child = execFile(PYTHON, ["-c", PY], { maxBuffer: 64 << 20 }, (error, stdout, stderr) =>
      error ? reject(new Error(stderr)) : resolve(JSON.parse(stdout)),
    );
    child.stdin.end(input);
  });
  let events = 0;
  cases.forEach((c, i) => {
    const d = new SSEDecoder();
    const got = [];
    for (const chunk of chunks(c)) got.push(...d.feed(chunk));
    got.push(...d.close());
    events += got.length;
    assert.deepEqual({ events: got, lastEventId: d.lastEventId, retry: d.retry }, python[i], `stream ${i}: ${JSON.stringify(Buffer.from(c.bytes).toString("latin1"))}`);
  });
  assert.ok(events > 300, `only ${events} events: the streams are too dull to compare`);
});
