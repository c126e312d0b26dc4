"""The fake OpenAI-compatible upstream of the relay and gateway benchmarks.

Raw asyncio protocols on uvloop, pre-encoded SSE chunks, run in a process of
its own (``run_upstream``), so it costs the benchmarks' clients and relays
nothing. Every ``POST`` (any path; the body is read to its ``Content-Length``)
gets a ``chat.completion.chunk`` stream: the role chunk and the first token at
once, then one token every ``1 / RATE`` seconds, then a ``stop`` chunk and
``data: [DONE]``, and the connection closes. ``tokens`` tokens per stream, or
the request's ``max_tokens`` / ``max_completion_tokens`` when it names one.

Each token's text is the ``time.monotonic()`` at which it was due, six
decimals, then a space (``"content":"1234.567890 "``; the first one's is when
it was written), so a reader computes its lateness from the bytes alone.
Streams are spread over the period by a ticker that wakes every ``TICK``
seconds and writes the tokens of the streams in that slot, so 1 000 streams
cost 200 wake-ups a second, not 20 000 timers. With ``certdir`` (a
``cert.pem`` and ``key.pem``) it serves HTTPS: ``make_certificate`` writes them
there, issued for 127.0.0.1 by a private CA (``trustme``) whose certificate,
``ca.pem``, its clients trust (``SSL_CERT_FILE``, or an ``ssl`` context).

With ``keep_alive`` it behaves as real providers' servers do: a request that
does not say ``Connection: close`` gets its answer in chunked encoding, the
connection stays open for the next request (a client's pool reuses it), and
the last chunk (``[DONE]``) and the body's end go in one write. Without it
every answer ends by closing the connection.

``GET /stats`` answers (and closes) with the connections accepted so far and,
over TLS, how many of them resumed a TLS session instead of a full handshake
(JSON ``{"connections": N, "resumed": M}``): what a client's pool cost it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from typing import Any

__all__ = ["RATE", "STAMP", "TICK", "make_certificate", "run_upstream"]

RATE = 20.0  # tokens per second per stream
TICK = 0.005  # the upstream's scheduler tick; streams are spread over the 50 ms period
#: A token's stamp in the bytes of a chunk (the upstream's, or relayed unchanged).
STAMP = re.compile(rb'"content": ?"(\d+\.\d{6}) ')


def chunk(delta: bytes, finish: bytes = b"null") -> bytes:
    return (
        b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",'
        b'"created":1760000000,"model":"m","choices":[{"index":0,"delta":'
        + delta
        + b',"finish_reason":'
        + finish
        + b"}]}\n\n"
    )


def _framed(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def make_certificate(certdir: str) -> str:
    """``cert.pem`` and ``key.pem`` for 127.0.0.1 in ``certdir``, from a private CA
    (``trustme``); returns the path of the CA's certificate, ``ca.pem``, to trust."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    with open(os.path.join(certdir, "cert.pem"), "wb") as f:
        f.writelines(blob.bytes() for blob in cert.cert_chain_pems)
    cert.private_key_pem.write_to_path(os.path.join(certdir, "key.pem"))
    path = os.path.join(certdir, "ca.pem")
    ca.cert_pem.write_to_path(path)
    return path


def run_upstream(port: int, tokens: int, certdir: str = "", keep_alive: bool = False) -> None:
    """Serve on 127.0.0.1:``port`` until killed."""
    import ssl

    import uvloop

    head, tail = chunk(b'{"content":"@"}').split(b"@")
    role = chunk(b'{"role":"assistant","content":""}')
    last = chunk(b"{}", b'"stop"') + b"data: [DONE]\n\n"
    period = round(1 / RATE / TICK)  # ticks between two tokens of one stream
    # phase -> [transport, sent, due, chunked]
    slots: list[list[Any]] = [[] for _ in range(period)]
    stats = {"connections": 0, "resumed": 0}

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buf = b""
            stats["connections"] += 1
            tls = transport.get_extra_info("ssl_object")  # handshake done (uvloop, asyncio)
            if tls is not None and tls.session_reused:
                stats["resumed"] += 1

        def data_received(self, data: bytes) -> None:
            self.buf += data
            headers, sep, body = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            if headers.startswith(b"GET /stats "):
                body = json.dumps(stats).encode()
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                )
                self.transport.close()
                return
            m = re.search(rb"(?i)content-length: *(\d+)", headers)
            length = int(m.group(1)) if m else 0
            if len(body) < length:
                return
            asked = re.search(rb'"max_(?:completion_)?tokens": *(\d+)', body[:length])
            self.buf = body[length:]
            chunked = keep_alive and not re.search(rb"(?i)\r\nconnection: *close", headers)
            first = role + head + b"%.6f " % time.monotonic() + tail  # the first token: at once
            if chunked:
                rest = b"transfer-encoding: chunked\r\n\r\n" + _framed(first)
            else:
                rest = b"connection: close\r\n\r\n" + first
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                + rest
            )
            # The next tokens on the first slot a period from now, round-robin.
            loop = asyncio.get_running_loop()
            phase = (round(loop.time() / TICK) + period) % period
            slots[phase].append([self.transport, 1, int(asked[1]) if asked else tokens, chunked])

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        mono0 = time.monotonic() - loop.time()
        n = round(loop.time() / TICK)
        while True:
            n += 1
            due_loop = n * TICK
            await asyncio.sleep(max(0.0, due_loop - loop.time()))
            due = b"%.6f " % (mono0 + due_loop)
            slot = slots[n % period]
            keep = []
            for item in slot:
                tr = item[0]
                if tr.is_closing():
                    continue
                if item[1] >= item[2]:
                    if item[3]:
                        tr.write(_framed(last) + b"0\r\n\r\n")  # the connection stays
                    else:
                        tr.write(last)
                        tr.close()
                    continue
                item[1] += 1
                tr.write(_framed(head + due + tail) if item[3] else head + due + tail)
                keep.append(item)
            slot[:] = keep

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ctx = None
        if certdir:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(os.path.join(certdir, "cert.pem"), os.path.join(certdir, "key.pem"))
        server = await loop.create_server(Proto, "127.0.0.1", port, backlog=4096, ssl=ctx)
        tick = loop.create_task(ticker())
        async with server:
            await server.serve_forever()
        tick.cancel()

    uvloop.run(main())
