// ReconnectPolicy (ssegate.js) against the Python ssegate.ReconnectPolicy: the
// same seeded random sequences of what connections saw must give the same
// delays, stops, last event ids and attempts. Plus the rules, one by one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ReconnectPolicy } from "../../src/ssegate/gateway/static/ssegate.js";
import { python, seeded } from "./twins.mjs";

function scenarios(count, seed) {
  const random = seeded(seed);
  const pick = (xs) => xs[Math.floor(random() * xs.length)];
  const out = [];
  for (let i = 0; i < count; i++) {
    const options = {
      retryMs: pick([0, 100, 1000, 3000]),
      maxAttempts: pick([null, 0, 1, 3, 8]),
      maxDelayMs: pick([0, 500, 5000, 30_000]),
      multiplier: pick([1, 1.5, 2, 3]),
      jitter: pick([0, 0.2, 1]),
    };
    const ops = [];
    for (let n = 0; n < 30; n++) {
      const op = pick(["connected", "event", "errorEvent", "serverRetry", "retryAfter", "failed", "failed", "failed"]);
      if (op === "event") ops.push(["event", String(n), pick([null, 50, 2000])]);
      else if (op === "serverRetry") ops.push(["serverRetry", pick([null, 0, 250, 4000])]);
      else if (op === "retryAfter") ops.push(["retryAfter", pick([0, 1000, 7000, 120_000])]);
      else ops.push([op]);
    }
    out.push({ options, ops, randoms: Array.from({ length: 40 }, random) });
  }
  return out;
}

function runJs({ options, ops, randoms }) {
  let r = 0;
  const policy = new ReconnectPolicy({ ...options, random: () => randoms[r++] });
  const trace = [];
  for (const [op, a, b] of ops) {
    if (op === "connected") policy.connected();
    else if (op === "event") policy.event({ id: a, retry: b });
    else if (op === "errorEvent") continue; // the client does not report these
    else if (op === "serverRetry") policy.serverRetry(a);
    else if (op === "retryAfter") policy.retryAfter(a);
    else trace.push([policy.failed(), policy.attempt, policy.lastEventId, policy.retryMs]);
  }
  return trace;
}

const PY = `
import json, sys
from ssegate import Event, ReconnectPolicy
out = []
for case in json.load(sys.stdin):
    o = case["options"]
    randoms = iter(case["randoms"])
    policy = ReconnectPolicy(retry_ms=o["retryMs"], max_retries=o["maxAttempts"],
                             max_delay=o["maxDelayMs"] / 1000, multiplier=o["multiplier"],
                             jitter=o["jitter"], random=lambda: next(randoms))
    trace = []
    for op in case["ops"]:
        if op[0] == "connected":
            policy.connected()
        elif op[0] == "event":
            policy.event(Event("x", id=op[1], retry=op[2]))
        elif op[0] == "serverRetry":
            policy.server_retry(op[1])
        elif op[0] == "retryAfter":
            policy.retry_after(op[1] / 1000)
        elif op[0] == "failed":
            delay = policy.failed()
            trace.append([None if delay is None else delay * 1000, policy.attempt,
                          policy.last_event_id, policy.retry_ms])
    out.append(trace)
json.dump(out, sys.stdout)
`;

test("the JS and Python policies decide alike on 300 seeded scenarios", async () => {
  const cases = scenarios(300, 14);
  const expected = await python(PY, cases);
  let stops = 0;
  let delays = 0;
  cases.forEach((c, i) => {
    const js = runJs(c);
    assert.equal(js.length, expected[i].length);
    js.forEach((step, k) => {
      const [delay, ...rest] = step;
      const [pyDelay, ...pyRest] = expected[i][k];
      const where = `scenario ${i} step ${k}: ${JSON.stringify(c.options)}`;
      if (pyDelay === null) {
        assert.equal(delay, null, where);
        stops++;
      } else {
        assert.ok(Math.abs(delay - pyDelay) < 1e-6, `${where}: ${delay} != ${pyDelay}`);
        delays++;
      }
      assert.deepEqual(rest, pyRest, where);
    });
  });
  assert.ok(stops > 100 && delays > 1000, `${stops} stops, ${delays} delays: too few to compare`);
});

test("back-off doubles to the cap, resets after progress, Retry-After replaces it once", () => {
  const p = new ReconnectPolicy({ retryMs: 1000, maxAttempts: 5, maxDelayMs: 5000, jitter: 0 });
  assert.deepEqual([p.failed(), p.failed(), p.failed(), p.failed()], [1000, 2000, 4000, 5000]);
  p.connected();
  p.event({ id: "7", retry: 300 });
  assert.equal(p.failed(), 300); // progress: back to the first delay, at the server's retry
  p.retryAfter(4000);
  assert.equal(p.failed(), 4000); // the server said when, whatever the back-off says
  p.retryAfter(20_000);
  assert.equal(p.failed(), 5000); // but never longer than the cap
  assert.equal(p.failed(), 2400);
  assert.deepEqual(p.headers(), { accept: "text/event-stream", "cache-control": "no-cache", "last-event-id": "7" });
  assert.deepEqual([p.failed(), p.failed()], [4800, null]);
  assert.equal(p.attempt, 6);
});
