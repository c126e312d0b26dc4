"""Relay benchmark: upstream LLM streams -> OpenAI-compatible adapter -> native events.

A fake OpenAI-compatible upstream (``benchmarks/fake_upstream.py``, its own
process, raw asyncio; the gateway benchmark's too) emits one
``chat.completion.chunk`` per stream at 20 tokens/s; each token's text is the
``time.monotonic()`` at which it was due. The same client (this process, raw
asyncio sockets, so it costs little) reads N concurrent streams either

- ``direct``: from the upstream itself (the floor), or
- through a relay process (uvicorn + uvloop + httptools, a raw ASGI app):
  - ``ssegate``: ``OpenAIProvider`` (its default ``HTTPClient``, aiohttp) -> ``NativeFormatter``
  - ``ssegate-httpx``: the same over ``default_http_client()`` (httpx, no connection cap)
  - ``ssegate-httpx100``: the same over httpx with its default limits (100 connections)
  - ``pipe``: the upstream's bytes forwarded untouched over the same ``HTTPClient``
    and uvicorn (no parsing, no formatting): the I/O floor of any Python relay
  - ``naive``: Starlette ``StreamingResponse`` over a default ``httpx.AsyncClient``,
    ``aiter_lines`` + ``json.loads`` + re-encode, as a first attempt would do.

Every size runs over plain HTTP and over TLS (``--transports``; over TLS only the
columns comparing HTTP clients, ``--tls-impls``): for ``tls`` the
upstream serves HTTPS with a certificate for 127.0.0.1 from a private CA made at
bench time (``trustme``), which the relays trust through ``SSL_CERT_FILE``
(the environment, as a deployment behind a corporate CA would); the relays still
serve their clients plain HTTP (TLS is terminated in front of them).

Reported per run: tokens delivered / due, lateness (arrival - due, where "due"
is the upstream's schedule) p50/p99, the relay process's CPU time per relayed
token (user+system, psutil), and the p99 wait for a stream's first token (a
relay capped at 100 upstream connections looks punctual on lateness, because
the upstream's schedule starts late, but makes clients wait a minute for it).
Medians of the repeats; ratios against ``direct`` (lateness) and ``ssegate``
(CPU). The machine is shared and noisy: compare columns of one run, not runs.
``RELAY_PROFILE=file`` writes a cProfile of the ssegate relay.

    .venv/bin/python benchmarks/relay.py            # 100 and 1000 streams, 3 repeats
    .venv/bin/python benchmarks/relay.py --quick    # shorter, 1 repeat
    .venv/bin/python benchmarks/relay.py --quick --transports tls --streams 1000

The figures behind the default client are in ``ssegate/llm/_client.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from _report import Report
from fake_upstream import RATE, make_certificate, run_upstream  # benchmarks/ is on sys.path
from pipe_relay import read_body

HERE = os.path.abspath(__file__)


# -- the relays -----------------------------------------------------------------------


def run_relay(port: int, upstream: str, impl: str) -> None:
    import uvicorn

    app = naive_app(upstream) if impl == "naive" else ssegate_app(upstream, impl)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="error",
        backlog=4096,
        timeout_keep_alive=30,
    )


def ssegate_app(upstream: str, impl: str) -> Any:
    from contextlib import aclosing

    import httpx

    from ssegate.llm import ChatRequest
    from ssegate.llm.formats import NativeFormatter
    from ssegate.llm.providers import HTTPClient, default_http_client
    from ssegate.llm.providers.openai import OpenAIProvider
    from ssegate.protocol import encode

    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    client: Any
                    if impl in ("ssegate", "pipe"):  # the default: HTTPClient (aiohttp)
                        client = HTTPClient()
                    elif impl == "ssegate-httpx":
                        client = default_http_client()  # httpx, no connection cap
                    else:  # httpx's default limits: 100 connections
                        client = httpx.AsyncClient(timeout=600.0)
                    state["provider"] = OpenAIProvider(
                        upstream + "/v1", "k", vendor="generic", client=client
                    )
                    state["client"] = client
                    if os.environ.get("RELAY_PROFILE"):  # a cProfile of the relay
                        import cProfile

                        state["prof"] = cProfile.Profile()
                        state["prof"].enable()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if "prof" in state:
                        state["prof"].disable()
                        state["prof"].dump_stats(os.environ["RELAY_PROFILE"])
                    await state["client"].aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = await read_body(receive)
        request = ChatRequest.from_openai(json.loads(body))
        fmt = NativeFormatter()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        if impl == "pipe":  # the I/O floor: upstream bytes forwarded untouched
            async with state["client"].stream(
                "POST", upstream + "/v1/chat/completions", headers={}, content=body
            ) as response:
                async for chunk in response.aiter_bytes():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        # One send per upstream read (stream_batches), not one per token.
        fmt_ = fmt.format
        async with aclosing(state["provider"].stream_batches(request)) as batches:
            async for batch in batches:
                data = b"".join([encode(e) for ev in batch for e in fmt_(ev)])
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def naive_app(upstream: str) -> Any:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    client = httpx.AsyncClient(timeout=600.0)

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()

        async def gen() -> Any:
            async with client.stream("POST", upstream + "/v1/chat/completions", json=body) as resp:
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    for choice in chunk.get("choices", []):
                        text = choice.get("delta", {}).get("content")
                        if text:
                            yield "event: token\ndata: " + json.dumps({"text": text}) + "\n\n"
                        if choice.get("finish_reason"):
                            yield "event: done\ndata: {}\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


# -- the clients ----------------------------------------------------------------------

_STAMP = re.compile(rb'"(\d+\.\d{6}) ')
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "go"}]}).encode()


async def one_stream(
    port: int, lateness: list[float], counts: list[int], firsts: list[float], ctx: Any
) -> None:
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(BODY) + BODY
    )
    tail = b""
    got = 0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            now = time.monotonic()
            data = tail + data
            cut = data.rfind(b"\n")
            tail = data[cut + 1 :]
            stamps = _STAMP.findall(data, 0, cut + 1)
            if stamps and not got:
                firsts.append(now - began)
            for s in stamps:
                lateness.append(now - float(s))
            got += len(stamps)
    finally:
        writer.close()
        counts.append(got)


async def run_clients(
    port: int, streams: int, ctx: Any = None
) -> tuple[list[float], list[int], list[float]]:
    lateness: list[float] = []
    counts: list[int] = []
    firsts: list[float] = []
    sem = asyncio.Semaphore(200)  # open connections in waves, not all in one SYN burst

    async def guarded() -> None:
        async with sem:
            pass
        await one_stream(port, lateness, counts, firsts, ctx)

    await asyncio.gather(*(guarded() for _ in range(streams)))
    return lateness, counts, firsts


# -- orchestration --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, HERE, *args], env=env)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(impl: str, streams: int, tokens: int, certdir: str = "") -> dict[str, float]:
    import ssl

    import psutil
    import uvloop

    up_port = free_port()
    upstream = spawn(
        "--role", "upstream", "--port", str(up_port), "--tokens", str(tokens),
        "--certdir", certdir,
    )  # fmt: skip
    scheme = "https" if certdir else "http"
    env = dict(os.environ)
    ctx = None
    if certdir:  # the relays trust the certificate through the environment
        env["SSL_CERT_FILE"] = os.path.join(certdir, "ca.pem")
        ctx = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    relay = None
    try:
        wait_port(up_port)
        port = up_port
        if impl != "direct":
            port = free_port()
            relay = spawn(
                "--role",
                "relay",
                "--port",
                str(port),
                "--upstream",
                f"{scheme}://127.0.0.1:{up_port}",
                "--impl",
                impl,
                env=env,
            )
            wait_port(port)
        proc = psutil.Process(relay.pid if relay else upstream.pid)
        before = proc.cpu_times()
        lateness, counts, firsts = uvloop.run(
            run_clients(port, streams, ctx if impl == "direct" else None)
        )
        after = proc.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        delivered = sum(counts)
        return {
            "delivered": delivered / (streams * tokens),
            "p50": pct(lateness, 0.50) * 1000,
            "p99": pct(lateness, 0.99) * 1000,
            "first99": pct(firsts, 0.99) * 1000,
            "cpu_us": cpu / max(1, delivered) * 1e6,
        }
    finally:
        for p in (relay, upstream):
            if p is not None:
                p.terminate()
                p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--role", default="bench", choices=["bench", "upstream", "relay"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=None, help="tokens per stream")
    ap.add_argument("--upstream", default="")
    ap.add_argument("--impl", default="ssegate")
    ap.add_argument("--quick", action="store_true", help="short streams, one repeat")
    ap.add_argument("--streams", default="100,1000")
    ap.add_argument("--impls", default="direct,ssegate,pipe,ssegate-httpx,ssegate-httpx100,naive")
    ap.add_argument("--transports", default="http,tls", help="http, tls or both")
    ap.add_argument(
        "--tls-impls",
        default="direct,ssegate,ssegate-httpx",
        help="the columns run over TLS too (the HTTP clients compared; the capped and "
        "naive relays are about the relay's design, which TLS does not change)",
    )
    ap.add_argument("--certdir", default="")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.role == "upstream":
        run_upstream(args.port, args.tokens or 100, args.certdir)
        return
    if args.role == "relay":
        run_relay(args.port, args.upstream, args.impl)
        return

    tokens = args.tokens or (40 if args.quick else 120)  # 2 s or 6 s per stream
    repeats = 1 if args.quick else args.repeats
    impls = args.impls.split(",")
    print(
        f"relay benchmark: {tokens} tokens/stream at {RATE:.0f} tokens/s, {repeats} repeat(s), "
        f"{os.cpu_count()} CPUs (shared: numbers are noisy; compare within this run)"
    )
    import tempfile

    charts = Report("relay", "Relaying a provider's stream: lateness and CPU per token.")
    with tempfile.TemporaryDirectory() as tmp:
        make_certificate(tmp)
        for streams in [int(s) for s in args.streams.split(",")]:
            for transport in args.transports.split(","):
                tls = transport == "tls"
                columns = [i for i in impls if i in args.tls_impls.split(",")] if tls else impls
                med = report(streams, transport, tmp if tls else "", columns, tokens, repeats)
                title = f"{streams} streams over {transport.upper()}"
                charts.table(
                    f"{title}: lateness p99",
                    "ms",
                    {i: m["p99"] for i, m in med.items()},
                    ours="ssegate",
                    higher_is_better=False,
                )
                charts.table(
                    f"{title}: relay CPU per token",
                    "CPU us/token",
                    {i: m["cpu_us"] for i, m in med.items() if i != "direct"},
                    ours="ssegate",
                    higher_is_better=False,
                    words=("cheaper", "costlier"),
                )
        charts.save()


def report(
    streams: int, transport: str, certdir: str, impls: list[str], tokens: int, repeats: int
) -> dict[str, dict[str, float]]:
    results: dict[str, list[dict[str, float]]] = {i: [] for i in impls}
    for _ in range(repeats):
        for impl in impls:  # interleaved, so drifting load hits every column
            results[impl].append(measure(impl, streams, tokens, certdir))
    med = {i: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for i, rs in results.items()}
    print(
        f"\n{streams} concurrent streams over {transport.upper()} "
        f"({streams * RATE:.0f} tokens/s due)"
    )
    print(
        f"{'':18}{'delivered':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99/direct':>11}"
        f"{'CPU us/tok':>11}{'CPU/ssegate':>12}{'1st token p99 ms':>17}"
    )
    base = med.get("direct", {}).get("p99")
    ours = med.get("ssegate", {}).get("cpu_us")
    for impl, m in med.items():
        ratio = f"{m['p99'] / base:.2f}x" if base else "-"
        cpu = "-" if impl == "direct" else f"{m['cpu_us']:.1f}"
        cpu_ratio = f"{m['cpu_us'] / ours:.2f}x" if ours and impl != "direct" else "-"
        print(
            f"{impl:18}{m['delivered'] * 100:>9.1f}%{m['p50']:>9.1f}{m['p99']:>9.1f}"
            f"{ratio:>11}{cpu:>11}{cpu_ratio:>12}{m['first99']:>17.0f}",
            flush=True,
        )
    return med


if __name__ == "__main__":
    main()
