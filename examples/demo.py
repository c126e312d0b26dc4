"""A small end-to-end demo: a local ASGI server streams an answer token by token,
and a client prints each event as it arrives.

Both ends use only ssegate's protocol core, on a real uvicorn on 127.0.0.1:
the server encodes with ``ssegate.encode``; the client decodes the bytes it
reads with ``ssegate.Decoder``, whatever the chunking.

    python examples/demo.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx

import ssegate
from ssegate.testing import serve

ANSWER = (
    "Server-Sent Events stream text over plain HTTP: one event per token, "
    "resumable after a network blink with Last-Event-ID."
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app: GET /answer streams the answer word by word."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send(
        {"type": "http.response.body", "body": ssegate.encode_comment("ok"), "more_body": True}
    )
    for i, word in enumerate(ANSWER.split(" ")):
        token = word if i == 0 else " " + word
        event = ssegate.Event(json.dumps({"text": token}), event="token", id=str(i + 1))
        await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
        await asyncio.sleep(0.03)
    done = ssegate.Event(json.dumps({"finish_reason": "stop"}), event="done")
    await send({"type": "http.response.body", "body": done.encode(), "more_body": False})


def main() -> None:
    with serve(app) as server:
        url = server.url + "/answer"
        print(f"streaming {url}\n", file=sys.stderr)
        start = time.perf_counter()
        decoder = ssegate.Decoder()
        count = 0
        with httpx.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            for chunk in response.iter_raw():
                for event in decoder.feed(chunk):
                    count += 1
                    if event.event == "token":
                        print(event.json()["text"], end="", flush=True)
                    elif event.event == "done":
                        print()
        decoder.close()
        elapsed = time.perf_counter() - start
        print(
            f"\n{count} events in {elapsed:.2f} s; last event id {decoder.last_event_id!r}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
