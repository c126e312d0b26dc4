"""Server throughput, memory and lateness: ssegate vs sse-starlette vs raw ASGI.

    .venv/bin/python benchmarks/server.py            # the full run (a few minutes)
    .venv/bin/python benchmarks/server.py --quick    # a short run, smaller counts

Every server runs under uvicorn (httptools + uvloop, one worker) in its own
process on 127.0.0.1; the load generator runs in separate processes (asyncio +
uvloop protocols, no HTTP library) so it is not what is measured. Three apps
serve the same async generator of ~150-byte events:

* ``ssegate``: ``ssegate.server.EventSourceResponse``;
* ``sse-starlette``: ``sse_starlette.EventSourceResponse``;
* ``raw-asgi``: a hand-written ASGI app, one ``send`` per event.

Measured, all in one run, medians of several repeats, with ratios:

1. throughput: 1, 100 and 1 000 concurrent clients reading as fast as events
   come; events/s and server CPU seconds per 100 k events;
2. memory: RSS growth of one server process holding 1 000 and 10 000 idle
   streams (KiB per stream);
3. LLM-like load: 1 000 streams each emitting 20 events/s on a schedule; how late
   events arrive against it (p50/p99) and whether the server keeps up.

The machine is shared and noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

KINDS = ("ssegate", "sse-starlette", "raw-asgi")
FILLER = "x" * 130  # with the counter and framing, ~150 bytes per event
HERE = os.path.abspath(__file__)


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------
# Servers (run in their own process: ``server.py _serve KIND FD``)
# --------------------------------------------------------------------------


def build_app(kind: str) -> Any:
    from urllib.parse import parse_qs

    import anyio

    async def fast(n: int) -> Any:
        for i in range(n):
            yield f"{i:010d} {FILLER}"

    async def idle() -> Any:
        await anyio.sleep_forever()
        yield "never"

    async def llm(n: int, rate: float) -> Any:
        start = time.monotonic()
        for k in range(n):
            due = start + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            yield f"{due:.6f} {FILLER}"

    def producer(scope: Any) -> Any:
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        path = scope["path"]
        if path == "/fast":
            return fast(int(query["n"]))
        if path == "/llm":
            return llm(int(query["n"]), float(query["rate"]))
        return idle()

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    if kind == "ssegate":
        from ssegate.server import EventSourceResponse

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                return await lifespan(receive, send)
            await EventSourceResponse(producer(scope))(scope, receive, send)

    elif kind == "sse-starlette":
        from sse_starlette import EventSourceResponse as SSR

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                return await lifespan(receive, send)
            await SSR(producer(scope), ping=15)(scope, receive, send)

    else:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
        ]

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                return await lifespan(receive, send)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if scope["path"] == "/idle":
                while (await receive())["type"] != "http.disconnect":
                    pass
                return
            async for data in producer(scope):
                body = b"data: " + data.encode() + b"\n\n"
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def serve(kind: str, fd: int) -> None:
    raise_fd_limit()
    import uvicorn

    uvicorn.run(
        build_app(kind),
        fd=fd,
        http="httptools",
        loop="uvloop",
        workers=1,
        log_level="error",
        lifespan="on",
        backlog=4096,
        timeout_keep_alive=60,
    )


class Server:
    """One server process for one app kind."""

    def __init__(self, kind: str) -> None:
        import psutil

        self.kind = kind
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, HERE, "_serve", kind, str(sock.fileno())],
            pass_fds=(sock.fileno(),),
        )
        sock.close()
        self.ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 30
        while True:  # ready when it answers a short stream
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as probe:
                    probe.sendall(b"GET /fast?n=1 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                    if probe.recv(100).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.1)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------
# Load generator (runs in its own process: ``server.py _load JSON``)
# --------------------------------------------------------------------------


class Reader(asyncio.Protocol):
    """Reads one event stream; counts events (blank lines) and, optionally, lateness."""

    def __init__(self, request: bytes, want: int, lateness: list[float] | None) -> None:
        self.request = request
        self.want = want
        self.lateness = lateness
        self.events = 0
        self.headers_seen = False
        self.buffer = b""
        self.last = b""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.headers_seen:
            self.buffer += data
            _head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.headers_seen = True
            self.buffer = b""
            if not self.opened.done():
                self.opened.set_result(None)
            data = rest
        # Every event has one "data: " line (sse-starlette ends lines with CRLF,
        # the others with LF, so blank lines are not counted). A match may span
        # two reads, so the last 5 bytes (never a whole match) are kept.
        buffer = self.buffer + data
        if self.lateness is None:
            self.events += buffer.count(b"data: ")
            self.buffer = buffer[-5:]
        else:
            now = time.monotonic()
            parts = buffer.split(b"data: ")
            self.buffer = buffer[-5:]
            for part in parts[1:]:
                end = part.find(b" ")
                if end < 0:  # the value is not complete yet
                    self.buffer = b"data: " + part
                    break
                self.lateness.append(now - float(part[:end]))
                self.events += 1
        if self.events >= self.want and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if not self.opened.done():
            self.opened.set_result(None)


async def load(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    port, path, clients, want = spec["port"], spec["path"], spec["clients"], spec["want"]
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    lateness: list[float] | None = [] if spec.get("lateness") else None
    connecting = asyncio.Semaphore(200)  # bounded connect burst

    async def one() -> Reader:
        async with connecting:
            _, reader = await loop.create_connection(
                lambda: Reader(request, want, lateness), "127.0.0.1", port
            )
            await reader.opened
        return reader

    started = time.monotonic()
    readers = await asyncio.gather(*(one() for _ in range(clients)))
    if spec.get("hold"):
        # idle streams: report, then hold them until told to stop (stdin closes)
        print(json.dumps({"open": sum(r.headers_seen for r in readers)}), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        for r in readers:
            if r.transport is not None:
                r.transport.close()
        return {}
    await asyncio.gather(*(r.done for r in readers))
    elapsed = time.monotonic() - started
    result: dict[str, Any] = {
        "events": sum(r.events for r in readers),
        "elapsed": elapsed,
        "started": started,
        "finished": time.monotonic(),
    }
    if lateness is not None:
        result["lateness"] = lateness
    return result


def run_load(spec_json: str) -> None:
    raise_fd_limit()
    import uvloop

    spec = json.loads(spec_json)
    result = uvloop.run(load(spec))
    # a file, not stdout: large results through a pipe uvloop made non-blocking
    # come out torn
    with open(spec["out"], "w") as out:
        json.dump(result, out)


def collect(loads: list[tuple[subprocess.Popen[str], str]]) -> list[dict[str, Any]]:
    results = []
    for process, out in loads:
        process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"load generator failed ({process.returncode})")
        with open(out) as f:
            results.append(json.load(f))
        os.unlink(out)
    return results


def spawn_load(spec: dict[str, Any], *, hold: bool = False) -> tuple[subprocess.Popen[str], str]:
    fd, out = tempfile.mkstemp(prefix="ssegate-bench-", suffix=".json")
    os.close(fd)
    process = subprocess.Popen(
        [sys.executable, HERE, "_load", json.dumps(spec | {"hold": hold, "out": out})],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return process, out


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


def throughput(server: Server, clients: int, total_events: int) -> tuple[float, float]:
    """Returns (events/s, server CPU seconds per 100k events)."""
    per_client = max(1, total_events // clients)
    procs = 1 if clients == 1 else 2
    cpu0 = server.cpu()
    loads = [
        spawn_load(
            {"port": server.port, "path": f"/fast?n={per_client}", "clients": c, "want": per_client}
        )
        for c in split(clients, procs)
    ]
    results = collect(loads)
    cpu = server.cpu() - cpu0
    events = sum(r["events"] for r in results)
    wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
    expected = per_client * clients
    if events != expected:
        raise RuntimeError(f"{server.kind}: got {events} events, expected {expected}")
    return events / wall, cpu / events * 100_000


def idle_memory(kind: str, streams: int) -> float:
    """KiB of server RSS per idle stream."""
    server = Server(kind)
    try:
        time.sleep(0.5)
        base = server.rss()
        procs = max(1, streams // 2500)
        loads = [
            spawn_load({"port": server.port, "path": "/idle", "clients": c, "want": 1}, hold=True)
            for c in split(streams, procs)
        ]
        opened = sum(json.loads(p.stdout.readline())["open"] for p, _ in loads)  # type: ignore[union-attr]
        if opened != streams:
            raise RuntimeError(f"{kind}: only {opened} of {streams} idle streams opened")
        time.sleep(1.0)  # let allocations settle
        grown = server.rss() - base
        for p, out in loads:
            p.communicate("")
            os.unlink(out)
        return grown / streams / 1024
    finally:
        server.stop()


def llm_load(kind: str, streams: int, rate: float, seconds: float) -> dict[str, float]:
    server = Server(kind)
    try:
        n = int(rate * seconds)
        cpu0 = server.cpu()
        loads = [
            spawn_load(
                {
                    "port": server.port,
                    "path": f"/llm?n={n}&rate={rate}",
                    "clients": c,
                    "want": n,
                    "lateness": True,
                }
            )
            for c in split(streams, 2)
        ]
        results = collect(loads)
        cpu = server.cpu() - cpu0
    finally:
        server.stop()
    late = sorted(x for r in results for x in r["lateness"])
    events = len(late)
    wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
    return {
        "p50_ms": late[len(late) // 2] * 1000,
        "p99_ms": late[int(len(late) * 0.99)] * 1000,
        "max_ms": late[-1] * 1000,
        "delivered": events / (streams * n),
        "rate": events / wall,
        "target_rate": streams * rate,
        "cpu_share": cpu / wall,
    }


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run with smaller counts")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--only", choices=["throughput", "memory", "llm"], action="append", help="run one part"
    )
    args = parser.parse_args()
    raise_fd_limit()
    quick = args.quick
    repeats = args.repeats or (2 if quick else 3)
    parts = args.only or ["throughput", "memory", "llm"]
    print(
        f"# ssegate server benchmark ({'quick' if quick else 'full'}; {repeats} repeats; "
        f"medians; {os.cpu_count()} CPUs, shared and noisy: compare ratios)"
    )

    if "throughput" in parts:
        levels = [
            (1, 40_000 if quick else 150_000),
            (100, 60_000 if quick else 200_000),
            (1000, 60_000 if quick else 200_000),
        ]
        rates: dict[tuple[str, int], list[float]] = {}
        cpus: dict[tuple[str, int], list[float]] = {}
        servers = {kind: Server(kind) for kind in KINDS}
        try:
            for _ in range(repeats):
                for clients, total in levels:
                    for kind in KINDS:  # interleaved, so drift hits all alike
                        r, c = throughput(servers[kind], clients, total)
                        rates.setdefault((kind, clients), []).append(r)
                        cpus.setdefault((kind, clients), []).append(c)
        finally:
            for s in servers.values():
                s.stop()
        print("\n## Throughput: ~150-byte events, clients reading as fast as they come")
        print(
            f"{'clients':>7} | {'server':<13} | {'events/s':>10} | {'CPU s/100k':>10} | "
            f"{'vs sse-starlette':>16} | {'vs raw-asgi':>11}"
        )
        print("-" * 82)
        for clients, _ in levels:
            med = {k: statistics.median(rates[(k, clients)]) for k in KINDS}
            for kind in KINDS:
                cpu = statistics.median(cpus[(kind, clients)])
                print(
                    f"{clients:>7} | {kind:<13} | {med[kind]:>10,.0f} | {cpu:>10.2f} | "
                    f"{ratio(med[kind], med['sse-starlette']):>16} | {ratio(med[kind], med['raw-asgi']):>11}"
                )

    if "memory" in parts:
        counts = [1000, 2000] if quick else [1000, 10_000]
        print("\n## Memory: server RSS growth per idle stream (KiB)")
        print(
            f"{'streams':>7} | "
            + " | ".join(f"{k:>13}" for k in KINDS)
            + " | ssegate/sse-starlette"
        )
        print("-" * 80)
        for count in counts:
            kib = {
                k: statistics.median(
                    idle_memory(k, count) for _ in range(1 if count > 2000 else repeats)
                )
                for k in KINDS
            }
            print(
                f"{count:>7} | "
                + " | ".join(f"{kib[k]:>13.1f}" for k in KINDS)
                + f" | {ratio(kib['ssegate'], kib['sse-starlette']):>8}"
            )

    if "llm" in parts:
        streams, rate, seconds = (300, 20.0, 4.0) if quick else (1000, 20.0, 8.0)
        print(
            f"\n## LLM-like load: {streams} streams x {rate:.0f} events/s for {seconds:.0f} s; "
            "lateness = arrival - schedule"
        )
        print(
            f"{'server':<13} | {'p50 ms':>8} | {'p99 ms':>8} | {'max ms':>8} | {'delivered':>9} | "
            f"{'events/s':>9} | {'server CPU':>10} | {'p99 vs raw':>10}"
        )
        print("-" * 96)
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
        # lateness tails are the noisiest figure on a shared machine: more repeats
        for _ in range(repeats if quick else max(repeats, 5)):
            for kind in KINDS:
                runs[kind].append(llm_load(kind, streams, rate, seconds))
        medians = {
            k: {f: statistics.median(r[f] for r in runs[k]) for f in runs[k][0]} for k in KINDS
        }
        for kind in KINDS:
            m = medians[kind]
            print(
                f"{kind:<13} | {m['p50_ms']:>8.1f} | {m['p99_ms']:>8.1f} | {m['max_ms']:>8.1f} | "
                f"{m['delivered']:>9.1%} | {m['rate']:>9,.0f} | {m['cpu_share']:>9.0%} | "
                f"{ratio(m['p99_ms'], medians['raw-asgi']['p99_ms']):>10}"
            )


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "_load":
        run_load(sys.argv[2])
    else:
        main()
