"""A fake LLM provider: replays recorded wire bytes over real HTTP on 127.0.0.1.

Remote providers cannot be reached from tests, so their answers are written down
as *captures*: HTTP/1.1 responses as bytes (status line, headers, blank line,
body), from the providers' documented formats. ``FakeUpstream`` is an ASGI app
that answers each request with the reply queued for its path, chunk by chunk,
and records what it saw:

- ``requests``: every request (method, path, headers, body), to assert what an
  adapter sent;
- ``disconnected`` / ``wait_disconnected()``: whether the client closed the
  connection before the reply was complete (that is what stops a real provider's
  generation), and ``disconnected_at`` (``time.monotonic()``) when it did.

``Reply(hold=True)`` keeps the connection open after the last chunk, as a slow
model would, until the client leaves; ``Reply(interval=0.1)`` waits that long
before each chunk, as a model generating at its own pace; ``Reply(abort=True)`` drops the connection
after the last chunk without ending the body, as a crashed upstream would.

    upstream = FakeUpstream()
    upstream.add("/v1/chat/completions", Reply.load("captures/openai_text.http"))
    with upstream.run() as url:
        ...  # point a provider at url + "/v1"
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

__all__ = ["FakeUpstream", "RecordedRequest", "Reply"]

_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class Reply:
    """One recorded answer: status, headers and the body as the chunks to write."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    chunks: tuple[bytes, ...] = ()
    hold: bool = False
    abort: bool = False
    interval: float = 0.0

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @classmethod
    def from_http(
        cls,
        raw: bytes,
        *,
        chunk_size: int | None = None,
        hold: bool = False,
        abort: bool = False,
    ) -> Reply:
        """Parse an HTTP/1.1 response capture (CRLF or LF in the head).

        The body is written one event (or NDJSON line) per chunk, as providers
        flush them, or in ``chunk_size`` pieces to exercise split frames.
        Content-Length and Transfer-Encoding are dropped: the server frames the
        body itself.
        """
        head_end = raw.find(b"\r\n\r\n")
        sep = 4
        lf_end = raw.find(b"\n\n")
        if head_end < 0 or (0 <= lf_end < head_end):
            head_end, sep = lf_end, 2
        if head_end < 0:
            raise ValueError("a capture needs a status line, headers and a blank line")
        head = raw[:head_end].decode("latin-1").replace("\r\n", "\n").split("\n")
        body = raw[head_end + sep :]
        status_line = head[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
            raise ValueError(f"not an HTTP status line: {head[0]!r}")
        headers = []
        for line in head[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError(f"not a header line: {line!r}")
            if name.strip().lower() not in _HOP_HEADERS:
                headers.append((name.strip().lower(), value.strip()))
        return cls(
            status=int(status_line[1]),
            headers=tuple(headers),
            chunks=_split(body, chunk_size),
            hold=hold,
            abort=abort,
        )

    @classmethod
    def load(cls, path: str | PathLike[str], **options: Any) -> Reply:
        """``from_http`` of a capture file."""
        return cls.from_http(Path(path).read_bytes(), **options)


def _split(body: bytes, chunk_size: int | None) -> tuple[bytes, ...]:
    if not body:
        return ()
    if chunk_size is not None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        return tuple(body[i : i + chunk_size] for i in range(0, len(body), chunk_size))
    # One event per chunk: cut after each blank line (SSE) or line end (NDJSON).
    sep = b"\n\n"
    if b"\r\n\r\n" in body:
        sep = b"\r\n\r\n"
    elif sep not in body:
        sep = b"\n"
    pieces = body.split(sep)
    chunks = [p + sep for p in pieces[:-1]]
    if pieces[-1]:
        chunks.append(pieces[-1])
    return tuple(chunks)


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake upstream received; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeUpstream:
    """An ASGI app replaying queued ``Reply``s per path (the last one repeats).

    Thread-safe to inspect from the test while uvicorn serves it in its thread.
    """

    routes: MutableMapping[str, list[Reply]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnected_at: float | None = None

    def add(self, path: str, *replies: Reply) -> FakeUpstream:
        """Queue replies for ``path``; each request takes the next, the last repeats."""
        self.routes.setdefault(path, []).extend(replies)
        return self

    def wait_disconnected(self, timeout: float) -> bool:
        """Block until a client closed a connection early (True) or ``timeout`` passes."""
        return self.disconnected.wait(timeout)

    @contextmanager
    def run(self, **uvicorn_config: Any) -> Iterator[str]:
        """Serve on 127.0.0.1 (a real uvicorn in a thread); yields the base URL."""
        from ._uvicorn import serve

        with serve(self, **uvicorn_config) as server:
            yield server.url

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._client_left()
                return
            body.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        self.requests.append(RecordedRequest(scope["method"], path, headers, b"".join(body)))
        queue = self.routes.get(path)
        if not queue:
            reply = Reply(404, (("content-type", "application/json"),), (b'{"error":"no route"}',))
        else:
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
        await self._send(reply, receive, send)

    async def _send(self, reply: Reply, receive: Any, send: Any) -> None:
        import anyio

        async def watch() -> None:
            # After the request body, the next message is the client leaving.
            while (await receive())["type"] != "http.disconnect":
                pass
            self._client_left()
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await send(
                {
                    "type": "http.response.start",
                    "status": reply.status,
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers
                    ],
                }
            )
            for chunk in reply.chunks:
                if reply.interval:
                    await anyio.sleep(reply.interval)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if reply.abort:
                raise _Abort("the fake upstream drops the connection mid-body")
            if reply.hold:
                await anyio.sleep_forever()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()

    def _client_left(self) -> None:
        if not self.disconnected.is_set():
            self.disconnected_at = time.monotonic()
            self.disconnected.set()


class _Abort(Exception):
    """Raised inside the app so uvicorn closes the connection without ending the body."""
