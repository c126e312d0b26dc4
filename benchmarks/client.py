"""Client throughput over real sockets: ssegate's EventSource against the peers, in one run.

A uvicorn server in a separate process (so it does not share the GIL with the
clients) streams pre-encoded event-stream bytes; each client reads the whole
stream over HTTP on 127.0.0.1 and counts the events (and the count is checked).
Two streams:

- ``tokens``: an LLM answer, OpenAI ``chat.completion.chunk`` events of about
  200 bytes with ``id:`` lines, sent in 16 KiB writes;
- ``large``: 64 KiB events (a base64 image, a document), sent in 64 KiB writes.

Clients, each driven the way its users drive it, all on one ``httpx.Client``
(or ``AsyncClient``) so the transport is the same:

- ssegate ``EventSource`` / ``AsyncEventSource`` (``reconnect=False``);
- httpx-sse 0.4.3 ``connect_sse(...).iter_sse()`` / ``aconnect_sse(...).aiter_sse()``;
- sseclient-py 1.9 ``SSEClient(response.iter_bytes()).events()`` (sync only);
- the floor: ``response.iter_bytes()`` read and dropped (no parsing at all).

Each figure is the median of several repeats; ratios are peer time / ssegate
time (above 1: ssegate is faster). The machine is shared with other busy
processes, so absolute figures move between runs; the ratios, measured side by
side in one run, are the result.

    python benchmarks/client.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import httpx_sse
import sseclient
from _report import Report

from ssegate.client import AsyncEventSource, EventSource


def tokens_stream(count: int) -> bytes:
    words = ["Hello", " world", ",", " the", " answer", " is", " 42", ".", " 世界", " ok"]
    out = []
    for i in range(count):
        chunk = {
            "id": "chatcmpl-9x2Bq7LmZ",
            "object": "chat.completion.chunk",
            "created": 1732230000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": words[i % 10]}, "finish_reason": None}],
        }
        out.append(b"id: %d\ndata: %s\n\n" % (i, json.dumps(chunk).encode()))
    return b"".join(out)


def large_stream(count: int) -> bytes:
    data = b"A" * (64 * 1024)
    return b"".join(b"id: %d\ndata: %s\n\n" % (i, data) for i in range(count))


def make_app(streams: dict[str, tuple[bytes, int]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, write = streams[scope["path"].strip("/")]
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(body), write):
            chunk = body[start : start + write]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def streams_for(quick: bool) -> dict[str, tuple[bytes, int, int]]:
    """name -> (bytes, write size, number of events)."""
    tokens, large = (10_000, 40) if quick else (50_000, 200)
    return {
        "tokens": (tokens_stream(tokens), 16 * 1024, tokens),
        "large": (large_stream(large), 64 * 1024, large),
    }


def serve(port: int, quick: bool) -> None:
    import uvicorn

    streams = {name: (body, write) for name, (body, write, _) in streams_for(quick).items()}
    uvicorn.run(make_app(streams), host="127.0.0.1", port=port, log_level="warning")


# -- the clients -------------------------------------------------------------


def ssegate_sync(client: httpx.Client, url: str) -> int:
    with EventSource(url, client=client, reconnect=False) as events:
        return sum(1 for _ in events)


def httpx_sse_sync(client: httpx.Client, url: str) -> int:
    with httpx_sse.connect_sse(client, "GET", url) as source:
        return sum(1 for _ in source.iter_sse())


def sseclient_sync(client: httpx.Client, url: str) -> int:
    with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        return sum(1 for _ in sseclient.SSEClient(response.iter_bytes()).events())


def floor_sync(client: httpx.Client, url: str) -> int:
    with client.stream("GET", url) as response:
        for _ in response.iter_bytes():
            pass
    return -1


async def ssegate_async(client: httpx.AsyncClient, url: str) -> int:
    n = 0
    async with AsyncEventSource(url, client=client, reconnect=False) as events:
        async for _ in events:
            n += 1
    return n


async def httpx_sse_async(client: httpx.AsyncClient, url: str) -> int:
    n = 0
    async with httpx_sse.aconnect_sse(client, "GET", url) as source:
        async for _ in source.aiter_sse():
            n += 1
    return n


async def floor_async(client: httpx.AsyncClient, url: str) -> int:
    async with client.stream("GET", url) as response:
        async for _ in response.aiter_bytes():
            pass
    return -1


SYNC: dict[str, Callable[[httpx.Client, str], int]] = {
    "ssegate EventSource": ssegate_sync,
    "httpx-sse iter_sse": httpx_sse_sync,
    "sseclient-py": sseclient_sync,
    "httpx iter_bytes (floor)": floor_sync,
}
ASYNC: dict[str, Callable[[httpx.AsyncClient, str], Awaitable[int]]] = {
    "ssegate AsyncEventSource": ssegate_async,
    "httpx-sse aiter_sse": httpx_sse_async,
    "httpx aiter_bytes (floor)": floor_async,
}


def measure_sync(url: str, expected: int, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in SYNC}
    with httpx.Client(timeout=60) as client:
        for _ in range(repeats):
            for name, read in SYNC.items():  # interleaved: noise hits everyone alike
                start = time.perf_counter()
                n = read(client, url)
                times[name].append(time.perf_counter() - start)
                if n not in (expected, -1):
                    raise AssertionError(f"{name} read {n} events, expected {expected}")
    return times


def measure_async(url: str, expected: int, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in ASYNC}

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(repeats):
                for name, read in ASYNC.items():
                    start = time.perf_counter()
                    n = await read(client, url)
                    times[name].append(time.perf_counter() - start)
                    if n not in (expected, -1):
                        raise AssertionError(f"{name} read {n} events, expected {expected}")

    anyio.run(main)
    return times


def report(
    title: str, times: dict[str, list[float]], size: int, events: int, charts: Report
) -> None:
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    charts.table(title, "s", medians, higher_is_better=False)
    ours = next(m for name, m in medians.items() if name.startswith("ssegate"))
    print(f"\n{title}: {events:,} events, {size / 1e6:.1f} MB")
    print(f"  {'client':<28}{'median s':>10}{'events/s':>12}{'MB/s':>9}{'peer/ssegate':>14}")
    for name, median in medians.items():
        rate = f"{events / median:,.0f}" if "floor" not in name else "-"
        ratio = median / ours
        print(f"  {name:<28}{median:>10.3f}{rate:>12}{size / 1e6 / median:>9.1f}{ratio:>14.2f}")


def wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("the benchmark server did not start")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small streams, 3 repeats")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.quick)
        return
    repeats = 3 if args.quick else 7
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", str(port)] + (["--quick"] if args.quick else [])
    server = subprocess.Popen(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        wait_for(port)
        print(f"ssegate client benchmark (Python {sys.version.split()[0]}, {repeats} repeats;")
        print("shared, noisy machine: compare the ratios, not the absolute figures)")
        charts = Report("client", "Reading a stream over loopback: median seconds per stream.")
        for name, (body, _, events) in streams_for(args.quick).items():
            url = f"http://127.0.0.1:{port}/{name}"
            sync, aio = measure_sync(url, events, repeats), measure_async(url, events, repeats)
            report(f"sync, {name}", sync, len(body), events, charts)
            report(f"async, {name}", aio, len(body), events, charts)
        charts.save()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
