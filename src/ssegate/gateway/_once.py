"""Publishing to a topic at most once per client ``id`` (an idempotency key).

A client that re-sends a publish (its answer was lost to a network blink) sends
the same ``id``; the event is appended once and every answer carries the id the
store gave it. This is built on the stream store's contract alone, so it holds
across replicas sharing Redis: each ``(topic, id)`` has a small *claim* stream
(``pubid:<digest>``, never readable as a topic).

- Every publish appends a claim to it. The one whose claim is number 1 won: it
  appends the event to the topic, records ``{id, digest}`` in the claim stream
  and ends it (the store deletes it ``retention_seconds`` later, which is how
  long an id is remembered: the same window as the topic's history).
- Any other publish reads the claim stream from its start until that record
  (waiting while the winner is still writing, at most ``lease_ttl`` seconds):
  same event, the original id; different event, 409.

If the winner dies between its claim and its record (its process killed), the
id cannot be used again for ``retention_seconds``: a re-send is told so (409),
and nothing was published twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import anyio

from .._exceptions import StreamEnded
from ..protocol import Event
from ..streams import End, StreamStore, parse_id

__all__ = ["Published", "Reused", "publish_once"]

_CLAIM = "claim"
_DONE = "published"


@dataclass(frozen=True, slots=True)
class Published:
    """The topic event's id, and whether an earlier publish had appended it."""

    id: str
    duplicate: bool


class Reused(Exception):
    """The client ``id`` cannot name this publish (the message says why)."""


def _digest(event: Event) -> str:
    return hashlib.sha256(json.dumps([event.event, event.data]).encode()).hexdigest()


def claim_stream(topic_stream: str, client_id: str) -> str:
    key = hashlib.sha256(f"{topic_stream}\n{client_id}".encode()).hexdigest()[:40]
    return "pubid:" + key


async def publish_once(
    store: StreamStore, topic_stream: str, event: Event, client_id: str, *, wait: float
) -> Published:
    """Append ``event`` to ``topic_stream`` unless ``client_id`` already did it."""
    claims = claim_stream(topic_stream, client_id)
    digest = _digest(event)
    try:
        claim = parse_id(await store.append(claims, Event(digest, event=_CLAIM)))
    except StreamEnded:
        claim = None  # settled already: read the record
    if claim is not None and claim.seq == 1:
        try:
            event_id = await store.append(topic_stream, event)
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await store.end(claims, "failed")
            raise
        record = json.dumps({"id": event_id, "digest": digest})
        await store.append(claims, Event(record, event=_DONE))
        await store.end(claims)
        return Published(event_id, duplicate=False)
    return await _settled(store, claims, digest, client_id, wait)


async def _settled(
    store: StreamStore, claims: str, digest: str, client_id: str, wait: float
) -> Published:
    with anyio.move_on_after(wait):
        items = store.read(claims, None)
        try:
            async for item in items:
                if isinstance(item, End):
                    raise Reused(
                        f"id: the first publish with id {client_id!r} failed before its "
                        "event was stored (nothing was published); send it with a new id"
                    )
                if isinstance(item, Event) and item.event == _DONE:
                    record = json.loads(item.data)
                    if record["digest"] != digest:
                        raise Reused(
                            f"id: {client_id!r} was already used for a different event "
                            f"on this topic (its id is {record['id']})"
                        )
                    return Published(record["id"], duplicate=True)
        finally:
            await items.aclose()  # type: ignore[attr-defined]
    raise Reused(
        f"id: a publish with id {client_id!r} is still being written (or its replica "
        "died while writing it); retry in a moment"
    )
