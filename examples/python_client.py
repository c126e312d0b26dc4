"""Read an event stream from Python, surviving a dropped connection.

    python examples/python_client.py                 # against a built-in demo server
    python examples/python_client.py URL             # against your own stream

The demo server counts to 6 but drops the connection after every 2 events;
the client reconnects with ``Last-Event-ID`` and gets each number exactly once.
The async twin, ``AsyncEventSource``, reads the same way with ``async for``.
"""

from __future__ import annotations

import sys
from typing import Any

from ssegate import Event
from ssegate.client import EventSource
from ssegate.testing import serve


async def counting_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Count to 6 from the client's Last-Event-ID; drop every 2 events; 204 when done."""
    if scope["type"] != "http":
        return
    headers = dict(scope["headers"])
    start = int(headers.get(b"last-event-id", b"0"))
    if start >= 6:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    body = b"retry: 100\n\n"  # reconnect after 0.1 s, not the default 3 s
    for n in range(start + 1, min(start + 3, 7)):
        body += b'id: %d\ndata: {"n": %d}\n\n' % (n, n)
    await send({"type": "http.response.body", "body": body, "more_body": True})
    # Return without finishing the body: the connection drops, as on a bad network.


def read(url: str) -> list[Event]:
    """Print every event of the stream until the server says it is finished (204)."""
    received = []
    with EventSource(url) as events:
        for event in events:
            print(f"{event.event} id={event.id}: {event.data}")
            received.append(event)
    return received


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        read(argv[1])
        return
    with serve(counting_app, log_level="critical") as server:
        numbers = [event.json()["n"] for event in read(server.url)]
    assert numbers == [1, 2, 3, 4, 5, 6], numbers  # each exactly once, in order


if __name__ == "__main__":
    main(sys.argv)
