"""``BodyLimit``: request bodies over the limit are answered 413 before any route runs.

The body is read here, bounded, and handed to the app whole: a ``Content-Length``
over the limit is refused without reading a byte, and a chunked body that
grows past it is refused as soon as it does (never buffered beyond the limit).
"""

from __future__ import annotations

from typing import Any

from ._errors import api_error

__all__ = ["BodyLimit", "Replay"]


class BodyLimit:
    """ASGI middleware refusing bodies over ``max_bytes`` with an OpenAI-shaped 413."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if self.declared_too_long(scope):
            await self._refuse(scope, receive, send)
            return
        read = await self.read(receive)
        if read is None:
            return
        body, over = read
        if over:
            await self._refuse(scope, receive, send)
            return
        await self.app(scope, Replay(body, receive), send)

    def declared_too_long(self, scope: Any) -> bool:
        """Whether the request's ``Content-Length`` is over the limit."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return True
        return False

    async def read(self, receive: Any) -> tuple[bytes, bool] | None:
        """The body and whether it is over the limit (read up to the chunk that
        passes it, no further); ``None`` when the client left first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                return b"".join(chunks), True
            if not message.get("more_body"):
                return b"".join(chunks), False

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        response = api_error(
            413,
            f"The request body is larger than {self.max_bytes} bytes.",
            code="request_too_large",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class Replay:
    """A ``receive`` that gives ``body`` (whole) first, then what ``receive`` gives.

    An object, not a closure: it lives as long as the request (a stream's), and
    is one object where a closure is a function and a cell per variable.
    """

    __slots__ = ("body", "receive")

    def __init__(self, body: bytes, receive: Any) -> None:
        self.body: bytes | None = body
        self.receive = receive

    async def __call__(self) -> Any:
        body = self.body
        if body is None:
            return await self.receive()
        self.body = None
        return {"type": "http.request", "body": body, "more_body": False}
