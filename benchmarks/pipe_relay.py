"""The floor of any relay on ssegate's stack: uvicorn and aiohttp, the upstream's bytes untouched.

``benchmarks/gateway.py`` runs it beside the gateway as the column ``pipe``,
under the same load: what a relay costs that does nothing but the
I/O every relay of a provider's stream does, on the libraries the gateway is
built on, tuned as the gateway is. It is one process of uvicorn (uvloop,
httptools, no access log, the gateway's backlog) serving a raw ASGI app:
``POST /v1/chat/completions`` reads the body, posts it as it is to the upstream
through one ``aiohttp.ClientSession`` (no cap on connections, kept alive between
answers; the system's CA store, so ``SSL_CERT_FILE`` trusts the benchmark's private
CA and verification stays on; no decompression, no total timeout), and forwards
each read of the upstream's body to the client as one ASGI body message. It does
none of what the gateway does with a stream: no validation of the body, no auth,
no model routing, no parsing of the upstream's events, no store, no resume, no
renumbered ids, no metrics, no logs, no cancellation when the client leaves (its
answer runs to the upstream's end). Not part of ssegate; only a measure of the
stack under it.

``--server granian``: the same app served by granian instead (a Rust HTTP server
for ASGI apps, well kept, the one most often proposed as faster than uvicorn;
in the ``bench`` extra), embedded in this process (one worker, one runtime
thread, uvloop, HTTP/1.1, no WebSockets, no access log, the same backlog), so
that its CPU is this process's: whether the floor is uvicorn's or any Python
ASGI server's. ``benchmarks/gateway.py`` runs it as the column ``granian``.

    .venv/bin/python benchmarks/pipe_relay.py --port 8081 --upstream https://127.0.0.1:8443
    .venv/bin/python benchmarks/pipe_relay.py --server granian --port 8082 --upstream ...
"""

from __future__ import annotations

import argparse
import ssl
from typing import Any

Scope = dict[str, Any]


async def read_body(receive: Any) -> bytes:
    """An ASGI request's whole body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def pipe_app(upstream: str) -> Any:
    """The raw ASGI app relaying ``POST /v1/chat/completions`` to ``upstream``'s."""
    import aiohttp

    url = upstream.rstrip("/") + "/v1/chat/completions"
    held: dict[str, aiohttp.ClientSession] = {}
    json_headers = {"content-type": "application/json"}

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=0, ssl=ssl.create_default_context())
                held["session"] = aiohttp.ClientSession(
                    connector=connector,
                    auto_decompress=False,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await held["session"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = await read_body(receive)
        async with held["session"].post(url, data=body, headers=json_headers) as answer:
            kind = answer.headers.get("content-type", "text/event-stream").encode("latin-1")
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [(b"content-type", kind), (b"cache-control", b"no-cache")],
                }
            )
            async for part in answer.content.iter_any():
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


#: The listening socket's backlog, the gateway's (``ssegate serve``).
BACKLOG = 4096


def serve_granian(app: Any, port: int) -> None:
    """``app`` on 127.0.0.1:``port`` by granian, in this process (its embedded server)."""
    import uvloop
    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    server = Server(
        app,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        runtime_threads=1,
        backlog=BACKLOG,
        log_access=False,
    )
    uvloop.run(server.serve())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="the upstream's base URL")
    ap.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    args = ap.parse_args()
    app = pipe_app(args.upstream)
    if args.server == "granian":
        serve_granian(app, args.port)
        return
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=BACKLOG,
    )


if __name__ == "__main__":
    main()
