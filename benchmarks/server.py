"""Server throughput, memory and lateness, as users deploy it: ssegate vs
Starlette's StreamingResponse vs sse-starlette vs raw ASGI.

    .venv/bin/python benchmarks/server.py            # the full run (~20 minutes)
    .venv/bin/python benchmarks/server.py --quick    # a smoke run, under a minute
    .venv/bin/python benchmarks/server.py --only llm --kind ssegate@route  # one part, some rows
    .venv/bin/python benchmarks/server.py --only llm --kind ssegate@fastapi --baseline ../main

Every server runs under uvicorn (httptools + uvloop, one worker) in its own
process on 127.0.0.1; the load generator runs in separate processes (asyncio +
uvloop protocols, no HTTP library) so it is not what is measured. Every server
streams the same async generator of ~150-byte events. The rows:

* ``raw-asgi``: a hand-written ASGI app, one ``send`` per event (the baseline);
* ``ssegate``: ``ssegate.server.EventSourceResponse`` called as a bare ASGI app;
* ``RESPONSE@route``: the response returned from a Starlette ``Route``;
* ``RESPONSE@fastapi``: returned from a FastAPI endpoint (query parameters
  validated) behind ``CORSMiddleware``, ``GZipMiddleware`` and a pure-ASGI
  timing middleware, as a service deploys it;
* RESPONSE is ``ssegate``, ``streaming`` (Starlette's ``StreamingResponse``
  with hand-written SSE framing, what users write without a library) or
  ``sse-starlette`` (``sse_starlette.EventSourceResponse``);
* ``ssegate@fastapi+frozen``: the same, the server having called
  ``ssegate.server.freeze_startup_objects()`` once started;
* ``hand-written@route`` and ``hand-written@fastapi`` (memory and LLM-like load
  only): a minimal ``Response`` that forwards the producer's items and nothing
  else (no keep-alives, no disconnect detection): what any response on that
  mount holds at least, the part of a stream's memory (and of the collector's
  work) that is Starlette's, FastAPI's, uvicorn's and the producer's;
* ``--baseline TREE``: every ``ssegate`` row again, served from ``TREE/src``
  (e.g. a ``git worktree`` of main), as ``ROW~base``, interleaved with this
  tree's rows in the same run.

Measured, all in one run, medians of several repeats, with ratios:

1. memory: RSS growth of one server process holding 1 000 and 10 000 idle
   streams (KiB per stream);
2. LLM-like load: 1 000 clients connect at once, each stream then emits 20
   events/s on a schedule; how late events arrive against it (p50/p99/max),
   the time to first byte (p99, from connect to the first byte of the
   response), server CPU per 100 k events, and the server's own collector runs
   of generations 1 and 2 and the longest one (``gc.callbacks``): the loop
   stops for as long as a collection takes;
3. burst throughput: 1, 100 and 1 000 concurrent clients reading as fast as
   events come; events/s and server CPU seconds per 100 k events.

The machine is shared and noisy: compare the ratios, not the absolute numbers,
and the lateness tails of several runs. ``--quick`` uses one server per row for
every part, one repeat and small counts: it checks the harness, its numbers
are not worth comparing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _report import Report

# Each row is a server as users deploy it: "raw-asgi" is the hand-written
# baseline; "ssegate" is EventSourceResponse called as a bare ASGI app; the rest
# are RESPONSE@MOUNT: the response returned from a Starlette ``Route`` or from a
# FastAPI endpoint behind CORS, GZip and a pure-ASGI timing middleware.
RESPONSES = ("ssegate", "streaming", "sse-starlette")
MOUNTS = ("route", "fastapi")
# "+frozen": the server calls ssegate.server.freeze_startup_objects() once started.
KINDS = (
    "raw-asgi",
    "ssegate",
    *(f"{r}@{m}" for m in MOUNTS for r in RESPONSES),
    "ssegate@fastapi+frozen",
    "hand-written@route",
    "hand-written@fastapi",
)
# Rows without burst throughput: they cannot end a stream whose client left
# (the LLM-like load's streams end by completing).
MEMORY_ONLY = ("hand-written@route", "hand-written@fastapi")
# "ROW~base": the row served from --baseline's tree.
BASE = "~base"
FILLER = "x" * 130  # with the counter and framing, ~150 bytes per event
HERE = os.path.abspath(__file__)


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------
# Servers (run in their own process: ``server.py _serve KIND FD``)
# --------------------------------------------------------------------------


async def fast(n: int) -> Any:
    for i in range(n):
        yield f"{i:010d} {FILLER}"


async def idle() -> Any:
    import anyio

    await anyio.sleep_forever()
    yield "never"


async def llm(n: int, rate: float) -> Any:
    import anyio

    start = time.monotonic()
    for k in range(n):
        due = start + k / rate
        delay = due - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
        yield f"{due:.6f} {FILLER}"


def producer(path: str, query: Any) -> Any:
    if path == "/fast":
        return fast(int(query["n"]))
    if path == "/llm":
        return llm(int(query["n"]), float(query["rate"]))
    return idle()


def make_response(response: str, content: Any) -> Any:
    """The response object of one kind (for a route or an endpoint)."""
    if response == "hand-written":
        return hand_written_class()(content)
    if response == "ssegate":
        from ssegate.server import EventSourceResponse

        return EventSourceResponse(content)
    if response == "sse-starlette":
        from sse_starlette import EventSourceResponse as SSR

        return SSR(content, ping=15)
    from starlette.responses import StreamingResponse

    async def framed() -> Any:  # what users write: SSE framing by hand
        async for data in content:
            yield f"data: {data}\n\n"

    return StreamingResponse(
        framed(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@functools.cache
def hand_written_class() -> Any:
    from starlette.responses import Response

    class HandWritten(Response):
        """The least a streaming response on a route can hold: the producer, framed
        and forwarded; no keep-alives, no disconnect detection."""

        background = None  # FastAPI sets a returned response's background tasks

        def __init__(self, content: Any) -> None:
            self.content = content

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": RAW_HEADERS})
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            async for data in self.content:
                body = f"data: {data}\n\n".encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return HandWritten


RAW_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class Timing:
    """A pure-ASGI timing middleware, as a service has for its metrics."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0
        self.seconds = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.count += 1
            self.seconds += time.perf_counter() - start


def build_app(kind: str) -> Any:
    from urllib.parse import parse_qs

    response, _, mount = kind.removesuffix(BASE).removesuffix("+frozen").partition("@")

    if mount == "route":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.routing import Route

        async def endpoint(request: Request) -> Any:
            return make_response(response, producer(request.url.path, request.query_params))

        return Starlette(routes=[Route(path, endpoint) for path in ("/fast", "/idle", "/llm")])

    if mount == "fastapi":
        from fastapi import FastAPI
        from fastapi.middleware.cors import CORSMiddleware
        from fastapi.middleware.gzip import GZipMiddleware

        api = FastAPI()
        api.add_middleware(GZipMiddleware, minimum_size=500)
        api.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"])
        api.add_middleware(Timing)

        @api.get("/fast")
        async def fast_endpoint(n: int) -> Any:
            return make_response(response, fast(n))

        @api.get("/idle")
        async def idle_endpoint() -> Any:
            return make_response(response, idle())

        @api.get("/llm")
        async def llm_endpoint(n: int, rate: float) -> Any:
            return make_response(response, llm(n, rate))

        return api

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def bare_producer(scope: Any) -> Any:
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        return producer(scope["path"], query)

    if kind == "ssegate":
        from ssegate.server import EventSourceResponse

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                return await lifespan(receive, send)
            await EventSourceResponse(bare_producer(scope))(scope, receive, send)

        return app

    headers = RAW_HEADERS

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["path"] == "/idle":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        async for data in bare_producer(scope):
            body = b"data: " + data.encode() + b"\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return raw


class GCStats:
    """Counts and times the cyclic collector's runs per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.collected = 0
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started
        gen = info["generation"]
        self.runs[gen] += 1
        self.total[gen] += took
        self.longest[gen] = max(self.longest[gen], took)
        self.collected += info["collected"]

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def report(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "total_ms": [t * 1000 for t in self.total],
            "max_ms": [t * 1000 for t in self.longest],
            "collected": self.collected,
        }


def serve(kind: str, fd: int, stats_path: str) -> None:
    """Run one server; on SIGUSR1 it writes its collector statistics to ``stats_path``."""
    import gc
    import signal

    raise_fd_limit()
    import uvicorn

    stats = GCStats()
    gc.callbacks.append(stats)

    def dump(signum: int, frame: Any) -> None:
        with open(stats_path + ".tmp", "w") as out:
            json.dump(stats.report() | {"tracked": len(gc.get_objects())}, out)
        os.replace(stats_path + ".tmp", stats_path)
        stats.reset()

    signal.signal(signal.SIGUSR1, dump)
    if kind.removesuffix(BASE).endswith("+frozen"):
        from ssegate.server import freeze_startup_objects

        # sent by the parent once the server answers: start-up is over
        signal.signal(signal.SIGUSR2, lambda signum, frame: freeze_startup_objects())
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

    #: --baseline's source tree (TREE/src), for the "~base" rows
    baseline_src = ""

    def __init__(self, kind: str, *, wait: bool = True) -> None:
        import psutil

        self.kind = kind
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        self.port = sock.getsockname()[1]
        fd, self.stats_path = tempfile.mkstemp(prefix="ssegate-bench-gc-", suffix=".json")
        os.close(fd)
        env = None
        if kind.endswith(BASE):
            path = os.environ.get("PYTHONPATH")
            env = os.environ | {
                "PYTHONPATH": self.baseline_src + (os.pathsep + path if path else "")
            }
        self.process = subprocess.Popen(
            [sys.executable, HERE, "_serve", kind, str(sock.fileno()), self.stats_path],
            pass_fds=(sock.fileno(),),
            env=env,
        )
        sock.close()
        self.ps = psutil.Process(self.process.pid)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        kind = self.kind
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
        if kind.removesuffix(BASE).endswith("+frozen"):
            os.kill(self.process.pid, signal.SIGUSR2)
            time.sleep(0.2)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def gc_stats(self) -> dict[str, Any]:
        """The collector's runs since the last call (and the tracked objects now)."""
        before = os.stat(self.stats_path).st_mtime_ns
        os.kill(self.process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while os.stat(self.stats_path).st_mtime_ns == before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind}: no collector statistics")
            time.sleep(0.02)
        with open(self.stats_path) as f:
            return json.load(f)  # type: ignore[no-any-return]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.stats_path)
        if self.kind in MEMORY_ONLY:
            self.process.kill()  # its streams never end: uvicorn would wait for them
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
        self.connecting = time.monotonic()
        self.first_byte = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.monotonic()
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
    # a bounded connect burst, or (for time to first byte) every client at once
    connecting = asyncio.Semaphore(clients if spec.get("burst") else 200)

    async def one() -> Reader:
        async with connecting:
            connecting_at = time.monotonic()
            _, reader = await loop.create_connection(
                lambda: Reader(request, want, lateness), "127.0.0.1", port
            )
            reader.connecting = connecting_at
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
    if spec.get("burst"):
        result["ttfb"] = [r.first_byte - r.connecting for r in readers]
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


def idle_memory(kind: str, streams: int, shared: Server | None = None) -> float:
    """KiB of server RSS per idle stream (on a fresh server unless one is shared)."""
    server = shared or Server(kind)
    try:
        time.sleep(0.1 if shared else 0.5)
        base = server.rss()
        procs = max(1, streams // 2500)
        loads = [
            spawn_load({"port": server.port, "path": "/idle", "clients": c, "want": 1}, hold=True)
            for c in split(streams, procs)
        ]
        opened = sum(json.loads(p.stdout.readline())["open"] for p, _ in loads)  # type: ignore[union-attr]
        if opened != streams:
            raise RuntimeError(f"{kind}: only {opened} of {streams} idle streams opened")
        time.sleep(0.3 if shared else 1.0)  # let allocations settle
        grown = server.rss() - base
        for p, out in loads:
            p.communicate("")
            os.unlink(out)
        return grown / streams / 1024
    finally:
        if shared is None:
            server.stop()


def llm_load(
    kind: str, streams: int, rate: float, seconds: float, shared: Server | None = None
) -> dict[str, float]:
    """All clients connect at once; each stream then emits ``rate`` events/s on a schedule."""
    server = shared or Server(kind)
    try:
        n = int(rate * seconds)
        server.gc_stats()  # start counting now
        cpu0 = server.cpu()
        loads = [
            spawn_load(
                {
                    "port": server.port,
                    "path": f"/llm?n={n}&rate={rate}",
                    "clients": c,
                    "want": n,
                    "lateness": True,
                    "burst": True,
                }
            )
            for c in split(streams, 2)
        ]
        results = collect(loads)
        cpu = server.cpu() - cpu0
        gc_runs = server.gc_stats()
    finally:
        if shared is None:
            server.stop()
    late = sorted(x for r in results for x in r["lateness"])
    ttfb = sorted(x for r in results for x in r["ttfb"])
    events = len(late)
    wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
    return {
        "p50_ms": late[len(late) // 2] * 1000,
        "p99_ms": late[int(len(late) * 0.99)] * 1000,
        "max_ms": late[-1] * 1000,
        "ttfb_p99_ms": ttfb[int(len(ttfb) * 0.99)] * 1000,
        "delivered": events / (streams * n),
        "rate": events / wall,
        "cpu_share": cpu / wall,
        "cpu_100k": cpu / events * 100_000,
        "gc_runs": sum(gc_runs["runs"][1:]),  # generations 1 and 2 (0 is cheap)
        "gc_full": gc_runs["runs"][2],
        "gc_max_ms": max(gc_runs["max_ms"]),
        "gc_total_ms": sum(gc_runs["total_ms"]),
    }


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def peer(kind: str, response: str) -> str:
    """The same mount with another response (``ssegate@route`` -> ``streaming@route``)."""
    _, at, mount = kind.removesuffix(BASE).removesuffix("+frozen").partition("@")
    return f"{response}@{mount}" if at else kind


def ours(values: dict[str, float]) -> str | None:
    """The row charted as ours: bare ssegate if it ran (else the first ssegate row)."""
    return "ssegate" if "ssegate" in values else None


def median_fields(runs: list[dict[str, float]]) -> dict[str, float]:
    return {field: statistics.median(r[field] for r in runs) for field in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run with smaller counts")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--only", choices=["throughput", "memory", "llm"], action="append", help="run one part"
    )
    parser.add_argument(
        "--kind", choices=KINDS, action="append", help="run these servers only (and raw-asgi)"
    )
    parser.add_argument(
        "--streams", type=int, default=None, help="streams of the LLM-like load (default 1000)"
    )
    parser.add_argument(
        "--baseline",
        metavar="TREE",
        help="also serve every ssegate row from TREE/src (rows ROW~base), interleaved",
    )
    args = parser.parse_args()
    raise_fd_limit()
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    parts = args.only or ["memory", "llm", "throughput"]
    kinds = KINDS if not args.kind else tuple(k for k in KINDS if k in args.kind or k == "raw-asgi")
    if args.baseline:
        Server.baseline_src = os.path.join(os.path.abspath(args.baseline), "src")
        kinds = tuple(
            row for k in kinds for row in ((k, k + BASE) if k.startswith("ssegate") else (k,))
        )
    width = max(len(k) for k in kinds)
    print(
        f"# ssegate server benchmark ({'quick' if quick else 'full'}; {repeats} repeats; "
        f"medians; {os.cpu_count()} CPUs, shared and noisy: compare ratios)"
    )
    print(
        "# @route: returned from a Starlette Route; @fastapi: from a FastAPI endpoint behind "
        "CORS, GZip and a pure-ASGI timing middleware; streaming: Starlette's StreamingResponse"
    )

    def versus(values: dict[str, float], kind: str, response: str) -> str:
        other = peer(kind, response)
        return ratio(values[kind], values[other]) if other in values and other != kind else "-"

    charts = Report(
        "server", "Serving SSE: ssegate's response beside sse-starlette's and Starlette's."
    )
    # --quick: one server per kind for every part (fresh ones cost most of a
    # short run); a full run starts a fresh server for each memory and LLM run.
    shared: dict[str, Server] = {}
    if quick:
        for kind in kinds:
            shared[kind] = Server(kind, wait=False)  # start together
        for server in shared.values():
            server.wait_ready()
    try:
        if "memory" in parts:
            counts = [500] if quick else [1000, 10_000]
            print("\n## Memory: server RSS growth per idle stream (KiB)")
            print(
                f"{'server':<{width}} | "
                + " | ".join(f"{c:>6} streams" for c in counts)
                + " | vs sse-starlette | vs raw-asgi"
            )
            print("-" * (40 + width + 17 * len(counts)))
            kib: dict[int, dict[str, float]] = {}
            for count in counts:
                kib[count] = {
                    k: statistics.median(
                        idle_memory(k, count, shared.get(k))
                        for _ in range(1 if count > 2000 else repeats)
                    )
                    for k in kinds
                }
            last = kib[counts[-1]]
            charts.table(
                f"RSS growth per idle stream, {counts[-1]} streams",
                "KiB",
                last,
                ours=ours(last),
                higher_is_better=False,
                words=("smaller", "larger"),
            )
            for kind in kinds:
                print(
                    f"{kind:<{width}} | "
                    + " | ".join(f"{kib[c][kind]:>14.1f}" for c in counts)
                    + f" | {versus(last, kind, 'sse-starlette'):>16} | "
                    f"{ratio(last[kind], last['raw-asgi']):>11}"
                )

        if "llm" in parts:
            streams, rate, seconds = (100, 20.0, 1.0) if quick else (1000, 20.0, 8.0)
            streams = args.streams or streams
            print(
                f"\n## LLM-like load: {streams} streams connecting at once, each {rate:.0f} "
                f"events/s for {seconds:.0f} s"
            )
            print(
                "lateness = arrival - schedule; TTFB = connect to first byte; GC runs = the "
                "server's generation 1 and 2 collections during the run, full = generation 2, "
                "max = the longest of any, ms = all of them"
            )
            print(
                f"{'server':<{width}} | {'p50 ms':>6} | {'p99 ms':>6} | {'max ms':>6} | "
                f"{'TTFB p99':>8} | {'deliv.':>6} | {'CPU s/100k':>10} | {'GC runs':>7} | "
                f"{'GC full':>7} | {'GC max ms':>9} | {'GC ms':>6} | {'p99/raw':>7} | {'p99/streaming':>13} | "
                f"{'p99/sse-starlette':>17} | {'TTFB/raw':>8}"
            )
            print("-" * (170 + width))
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
            # lateness tails are the noisiest figure on a shared machine: more repeats
            for _ in range(repeats if quick else max(repeats, 5)):
                for kind in kinds:
                    runs[kind].append(llm_load(kind, streams, rate, seconds, shared.get(kind)))
            medians = {k: median_fields(runs[k]) for k in kinds}
            p99 = {k: m["p99_ms"] for k, m in medians.items()}
            ttfb = {k: m["ttfb_p99_ms"] for k, m in medians.items()}
            charts.table(
                f"LLM-like load, {streams} streams: lateness p99",
                "ms",
                p99,
                ours=ours(p99),
                higher_is_better=False,
            )
            for kind in kinds:
                m = medians[kind]
                print(
                    f"{kind:<{width}} | {m['p50_ms']:>6.1f} | {m['p99_ms']:>6.1f} | "
                    f"{m['max_ms']:>6.1f} | {m['ttfb_p99_ms']:>8.1f} | {m['delivered']:>6.1%} | "
                    f"{m['cpu_100k']:>10.2f} | {m['gc_runs']:>7.0f} | {m['gc_full']:>7.0f} | "
                    f"{m['gc_max_ms']:>9.1f} | {m['gc_total_ms']:>6.0f} | "
                    f"{ratio(p99[kind], p99['raw-asgi']):>7} | "
                    f"{versus(p99, kind, 'streaming'):>13} | "
                    f"{versus(p99, kind, 'sse-starlette'):>17} | "
                    f"{ratio(ttfb[kind], ttfb['raw-asgi']):>8}"
                )
            print("per repeat, in run order: lateness p99 ms (full collections, longest ms)")
            for kind in kinds:
                print(
                    f"{kind:<{width}} | "
                    + " ".join(
                        f"{r['p99_ms']:.0f} ({r['gc_full']:.0f}, {r['gc_max_ms']:.0f})"
                        for r in runs[kind]
                    )
                )
        if "throughput" in parts:
            kinds = tuple(k for k in kinds if k not in MEMORY_ONLY)
            levels = [
                (1, 150_000),
                (100, 200_000),
                (1000, 200_000),
            ]
            if quick:  # the level of the targets only
                levels = [(100, 10_000)]
            rates: dict[tuple[str, int], list[float]] = {}
            cpus: dict[tuple[str, int], list[float]] = {}
            servers = shared or {kind: Server(kind) for kind in kinds}
            try:
                for _ in range(repeats):
                    for clients, total in levels:
                        for kind in kinds:  # interleaved, so drift hits all alike
                            r, c = throughput(servers[kind], clients, total)
                            rates.setdefault((kind, clients), []).append(r)
                            cpus.setdefault((kind, clients), []).append(c)
            finally:
                if not shared:
                    for server in servers.values():
                        server.stop()
            print("\n## Burst throughput: ~150-byte events, clients reading as fast as they come")
            print(
                f"{'clients':>7} | {'server':<{width}} | {'events/s':>10} | {'CPU s/100k':>10} | "
                f"{'vs sse-starlette':>16} | {'vs raw-asgi':>11}"
            )
            print("-" * (70 + width))
            for clients, _ in levels:
                med = {k: statistics.median(rates[(k, clients)]) for k in kinds}
                charts.table(
                    f"Burst throughput, {clients} clients",
                    "events/s",
                    med,
                    ours=ours(med),
                    higher_is_better=True,
                )
                for kind in kinds:
                    cpu = statistics.median(cpus[(kind, clients)])
                    print(
                        f"{clients:>7} | {kind:<{width}} | {med[kind]:>10,.0f} | {cpu:>10.2f} | "
                        f"{versus(med, kind, 'sse-starlette'):>16} | "
                        f"{ratio(med[kind], med['raw-asgi']):>11}"
                    )
        charts.save()
    finally:
        for server in shared.values():
            server.stop()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) >= 2 and sys.argv[1] == "_load":
        run_load(sys.argv[2])
    else:
        main()
