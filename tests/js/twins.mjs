// What the differential tests (ssegate.js against its Python twin) share: a
// seeded random source, so a failure repeats, and a run of Python code.
import { execFile } from "node:child_process";
import { PYTHON } from "./gateway.mjs";

/** A seeded source of numbers in [0, 1) (mulberry32). */
export function seeded(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Run `script` with the Python that runs ssegate, `input` as JSON on stdin; its JSON stdout. */
export function python(script, input) {
  return new Promise((resolve, reject) => {
    const child = execFile(PYTHON, ["-c", script], { maxBuffer: 64 << 20 }, (error, stdout, stderr) =>
      error ? reject(new Error(stderr || error.message)) : resolve(JSON.parse(stdout)),
    );
    child.stdin.end(JSON.stringify(input));
  });
}
