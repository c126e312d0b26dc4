// ssegate.d.ts: declares every export of ssegate.js, and compiles (tsc --strict)
// together with a file that uses the module as people do (types/usage.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import * as module from "../../src/ssegate/gateway/static/ssegate.js";

const dts = readFileSync(new URL("../../src/ssegate/gateway/static/ssegate.d.ts", import.meta.url), "utf8");

test("every export of ssegate.js is declared", () => {
  const declared = [...dts.matchAll(/^export (?:class|function|const|interface) (\w+)/gm)].map((m) => m[1]);
  for (const name of Object.keys(module)) assert.ok(declared.includes(name), `${name} is not in ssegate.d.ts`);
});

test("the declarations compile with a strict user of them", async () => {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  const usage = fileURLToPath(new URL("./types/usage.ts", import.meta.url));
  const args = [tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--lib", "es2022,dom,dom.iterable", usage];
  const result = await new Promise((resolve) =>
    execFile(process.execPath, args, (error, stdout, stderr) => resolve({ code: error?.code ?? 0, out: stdout + stderr })),
  );
  assert.deepEqual(result, { code: 0, out: "" });
});
