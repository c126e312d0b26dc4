"""Server-Sent Events from a Starlette app, shut down gracefully.

Run it:   uvicorn examples.starlette_app:app
Watch it: curl -N http://127.0.0.1:8000/ticks

``/ticks`` sends a numbered tick every ``interval`` seconds and resumes after
``Last-Event-ID`` when the browser reconnects; ``/answer`` streams a canned
answer word by word, the way a language model would. On Ctrl-C or SIGTERM,
``GracefulShutdown`` sends every open stream a ``shutdown`` event and closes it,
so uvicorn exits at once instead of "Waiting for connections to close".
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from ssegate import Event
from ssegate.server import EventSourceResponse, GracefulShutdown

FAREWELL = Event("server restarting", event="shutdown")
ANSWER = "Server-Sent Events are plain HTTP: one long response, one event per blank line."


async def ticks(request: Request) -> EventSourceResponse:
    interval = float(request.query_params.get("interval", "1"))
    count = int(request.query_params.get("count", "1000000"))
    last = request.headers.get("last-event-id", "")
    start = int(last) + 1 if last.isdigit() else 0

    async def tick() -> AsyncIterator[Event]:
        for n in range(start, start + count):
            yield Event(str(n), event="tick", id=str(n))
            await anyio.sleep(interval)

    return EventSourceResponse(tick(), ping=15.0, retry=2000, farewell=FAREWELL)


async def answer(request: Request) -> EventSourceResponse:
    async def words() -> AsyncIterator[dict[str, str] | Event]:
        for word in ANSWER.split(" "):
            yield {"text": word + " "}
        yield Event('{"finish_reason":"stop"}', event="done")

    return EventSourceResponse(words())


app = GracefulShutdown(Starlette(routes=[Route("/ticks", ticks), Route("/answer", answer)]))
