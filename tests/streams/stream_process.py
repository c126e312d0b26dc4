"""A separate process for the multi-process tests (run as a script).

stream_process.py publish URL PREFIX STREAM N      append N events, end, print ids
stream_process.py subscribe URL PREFIX STREAM [AFTER]
    follow STREAM through a Hub, print one JSON line per item until the end
"""

from __future__ import annotations

import json
import sys

import anyio

from ssegate import Event
from ssegate.streams import End, Gap, Hub
from ssegate.streams.redis import RedisStore


async def publish(url: str, prefix: str, stream: str, n: int) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        for i in range(1, n + 1):
            print(await store.append(stream, Event(f"event {i}", event="token")), flush=True)
        await store.end(stream)


async def subscribe(url: str, prefix: str, stream: str, after: str | None) -> None:
    async with RedisStore(url, prefix=prefix, poll_interval=0.2) as store, Hub(store) as hub:
        items = hub.read(stream, after, missing_ok=True)
        print(json.dumps({"ready": True}), flush=True)
        async for item in items:
            if isinstance(item, Event):
                line = {"id": item.id, "event": item.event, "data": item.data}
            elif isinstance(item, Gap):
                line = {"gap": item.missed}
            else:
                assert isinstance(item, End)
                line = {"end": item.outcome, "id": item.id}
            print(json.dumps(line), flush=True)


def main(argv: list[str]) -> None:
    command, url, prefix, stream, *rest = argv
    if command == "publish":
        anyio.run(publish, url, prefix, stream, int(rest[0]))
    else:
        anyio.run(subscribe, url, prefix, stream, rest[0] if rest else None)


if __name__ == "__main__":
    main(sys.argv[1:])
