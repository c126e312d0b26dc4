"""Server-Sent Events from FastAPI: return an ``EventSourceResponse``.

Run it:   uvicorn examples.fastapi_app:app
Watch it: curl -N -X POST http://127.0.0.1:8000/chat -H 'content-type: application/json' \
              -d '{"prompt": "hello"}'

``response_class=EventSourceResponse`` makes the OpenAPI schema say
``text/event-stream``. The producer's ``finally`` runs when the client leaves,
which is where an upstream request would be cancelled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from pydantic import BaseModel

from ssegate import Event
from ssegate.server import CloseReason, EventSourceResponse

app = FastAPI(title="ssegate FastAPI example")
closed: list[CloseReason] = []  # what the demo's on_close saw (read by the tests)


class Prompt(BaseModel):
    prompt: str
    delay: float = 0.0


@app.post("/chat", response_class=EventSourceResponse)
async def chat(body: Prompt) -> EventSourceResponse:
    async def tokens() -> AsyncIterator[dict[str, str] | Event]:
        for word in f"You said: {body.prompt}".split(" "):
            await anyio.sleep(body.delay)
            yield {"text": word}
        yield Event('{"finish_reason":"stop"}', event="done")

    return EventSourceResponse(tokens(), ping=5.0, on_close=closed.append)
