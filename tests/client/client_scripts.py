"""A real server that misbehaves on purpose, following a script per test.

Each test registers a script (one step per connection attempt: the n-th request
gets step n, the last step repeats) under a fresh path ``/s/<token>``; any path
below it runs the same script, so ``/s/<token>/events`` works as a resume URL.
The server records every request it saw (method, path, headers, body), so tests
assert the ``Last-Event-ID`` of each reconnect exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx
import pytest

from ssegate import Event, ReconnectPolicy, SSEGateError
from ssegate.client import AsyncEventSource, EventSource
from ssegate.client._base import EventSourceBase

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class Stream:
    """Answer 200 ``text/event-stream``, send ``chunks`` one by one, then end.

    ``{path}`` in a header value becomes the script's path (for resume links).

    ``end``: "clean" finishes the body properly; "drop" closes the connection
    without finishing it (as a crashed server or a broken proxy does); "stall"
    sends nothing more until the client goes away.
    """

    chunks: list[bytes]
    end: Literal["clean", "drop", "stall"] = "clean"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """Answer a plain response."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, obj: Any, **headers: str) -> Reply:
    return Reply(status, json.dumps(obj).encode(), {"content-type": "application/json", **headers})


@dataclass(frozen=True)
class Resume:
    """A resumable stream: ``blocks[i]`` is the event with id ``i + 1``.

    Sends the blocks after the request's ``Last-Event-ID`` (204 when there are
    none left), cut after ``cut`` bytes (anywhere, even inside an event) and
    dropped; with ``cut=None`` it sends them all and ends cleanly.
    """

    blocks: tuple[bytes, ...]
    cut: int | None = None


Step = Stream | Reply | Resume


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def last_event_id(self) -> str | None:
        return self.headers.get("last-event-id")


@dataclass
class Script:
    path: str
    steps: list[Step]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    @property
    def last_event_ids(self) -> list[str | None]:
        return [s.last_event_id for s in self.seen]


class ScriptedApp:
    """The raw ASGI app (no framework: it must be able to break HTTP on purpose)."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self._tokens = itertools.count(1)

    def script(self, steps: list[Step], base_url: str) -> Script:
        path = f"/s/{next(self._tokens)}"
        script = Script(path, steps, url=base_url + path)
        self.scripts[path] = script
        return script

    async def __call__(self, scope: Scope, receive: Callable[..., Any], send: Any) -> None:
        if scope["type"] != "http":
            return
        parts = scope["path"].split("/")
        script = self.scripts.get("/".join(parts[:3]))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if script is None:
            await _reply(send, Reply(404, b"no such script"))
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        script.seen.append(Seen(scope["method"], scope["path"], headers, body))
        step = script.steps[min(len(script.seen), len(script.steps)) - 1]
        if isinstance(step, Resume):
            rest = step.blocks[int(headers.get("last-event-id") or 0) :]
            if not rest:
                await _reply(send, Reply(204))
                return
            body = b"".join(rest)
            if step.cut is None or step.cut >= len(body):
                step = Stream([body])
            else:
                step = Stream([body[: step.cut // 2], body[step.cut // 2 : step.cut]], end="drop")
        if isinstance(step, Reply):
            await _reply(send, step)
            return
        raw_headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
        raw_headers += [
            (k.encode(), v.replace("{path}", script.path).encode()) for k, v in step.headers.items()
        ]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        for chunk in step.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if step.end == "clean":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif step.end == "stall":
            while (await receive())["type"] != "http.disconnect":
                pass
        # "drop": return without finishing the body; uvicorn closes the connection.


async def _reply(send: Any, reply: Reply) -> None:
    headers = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


# -- running a client to the end ---------------------------------------------

# httpx's response streams are chains of async generators; stopping early (close(),
# until_done) leaves the inner ones for the garbage collector and trio warns about
# that (encode/httpx#3686, fix pending in encode/httpx#3777). Ours are closed.
TRIO_HTTPX_GENERATORS = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object:pytest.PytestUnraisableExceptionWarning"
)
MODES = ["sync", "asyncio", pytest.param("trio", marks=TRIO_HTTPX_GENERATORS)]

#: Bounds every run: a client that reconnects forever fails the test instead.
MAX_EVENTS = 50


@dataclass
class Outcome:
    events: list[Event] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    error: SSEGateError | None = None
    source: EventSourceBase | None = None


def run(
    mode: str,
    url: str,
    *,
    until_done: bool = False,
    policy: ReconnectPolicy | None = None,
    httpx_client: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Outcome:
    """Read ``url`` to the end with the client of ``mode``; record what happened.

    ``httpx_client``: settings of an httpx client to pass as ``client=`` (made
    here, inside the event loop that uses it).
    """
    out = Outcome()
    policy = policy or ReconnectPolicy(jitter=0.0, max_retries=5)
    if mode == "sync":
        with contextlib.ExitStack() as stack:
            if httpx_client is not None:
                kwargs["client"] = stack.enter_context(httpx.Client(**httpx_client))
            es = stack.enter_context(
                EventSource(url, policy=policy, sleep=out.delays.append, **kwargs)
            )
            out.source = es
            try:
                for event in es.until_done() if until_done else es:
                    out.events.append(event)
                    assert len(out.events) < MAX_EVENTS
            except SSEGateError as exc:
                out.error = exc
        return out

    async def sleep(delay: float) -> None:
        out.delays.append(delay)

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            if httpx_client is not None:
                client = httpx.AsyncClient(**httpx_client)
                kwargs["client"] = await stack.enter_async_context(client)
            es = await stack.enter_async_context(
                AsyncEventSource(url, policy=policy, sleep=sleep, **kwargs)
            )
            out.source = es
            try:
                async for event in es.until_done() if until_done else es:
                    out.events.append(event)
                    assert len(out.events) < MAX_EVENTS
            except SSEGateError as exc:
                out.error = exc

    anyio.run(main, backend=mode)
    return out
