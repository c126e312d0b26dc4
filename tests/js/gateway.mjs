// A real `ssegate serve` for the Node tests, and a TCP proxy that cuts
// connections (a network blink mid-stream) and records what went through it.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** The Python that runs ssegate: $SSEGATE_PYTHON, else the repository's .venv. */
export const PYTHON = process.env.SSEGATE_PYTHON ?? join(ROOT, ".venv", "bin", "python");

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Start `python -m ssegate serve --config <toml>` on a free port and wait for
 * /readyz. Returns {url, stop}. `config` is the TOML text.
 */
export async function ssegateServe(config) {
  const dir = mkdtempSync(join(tmpdir(), "ssegate-js-"));
  const file = join(dir, "gateway.toml");
  writeFileSync(file, config);
  const port = await freePort();
  const child = spawn(PYTHON, ["-m", "ssegate", "serve", "--config", file], {
    env: { ...process.env, SSEGATE_PORT: String(port) },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`ssegate serve exited (${child.exitCode}): ${stderr}`);
    try {
      if ((await fetch(url + "/readyz")).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`ssegate serve did not become ready: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGINT");
        const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

/**
 * A TCP proxy to 127.0.0.1:`port`. The first connection's response is cut
 * after `cutAfter` bytes (null: never); `cutNow()` breaks every open
 * connection. `requests` holds the head of each request that went through
 * (`{method, path, headers}`, header names in lower case).
 */
export async function cuttingProxy(port, { cutAfter = null } = {}) {
  const requests = [];
  const open = new Set();
  let first = true;
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    const pair = [client, upstream];
    open.add(pair);
    const limit = first ? cutAfter : null;
    first = false;
    let head = "";
    let headDone = false;
    const cut = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("data", (data) => {
      if (!headDone) {
        head += data.toString("latin1");
        const end = head.indexOf("\r\n\r\n");
        if (end >= 0) {
          headDone = true;
          const [line, ...fields] = head.slice(0, end).split("\r\n");
          const [method, path] = line.split(" ");
          const headers = {};
          for (const f of fields) {
            const colon = f.indexOf(":");
            headers[f.slice(0, colon).trim().toLowerCase()] = f.slice(colon + 1).trim();
          }
          requests.push({ method, path, headers });
        }
      }
      upstream.write(data);
    });
    let sent = 0;
    upstream.on("data", (data) => {
      if (limit !== null && sent + data.length >= limit) {
        client.write(data.subarray(0, limit - sent), cut);
        sent = limit;
        return;
      }
      sent += data.length;
      client.write(data);
    });
    for (const s of pair) {
      s.on("error", cut);
      s.on("close", cut);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    cutNow() {
      for (const [c, u] of open) {
        c.destroy();
        u.destroy();
      }
      open.clear();
    },
    async close() {
      this.cutNow();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Poll `condition()` every 10 ms until it is true; fail after `ms`. */
export async function until(condition, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
