"""An appender's add() on Redis queues the usual event the short way
(``RedisStore._queue_checked``): held equal to the general path, checks and all."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ssegate import Event
from ssegate.streams._store import check_event
from ssegate.streams.redis import RedisStore

# Text as producers send it (ASCII JSON, mostly), any Unicode, and lone surrogates
# (refused: they cannot be sent as UTF-8).
texts = st.one_of(
    st.text(st.characters(max_codepoint=127), max_size=40),
    st.text(max_size=20),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
)
kinds = st.one_of(st.just("message"), st.sampled_from(["token", "t", "dëlta"]), texts)


def _event(data: str, kind: str, event_id: str | None, retry: int | None) -> Event:
    # Built as the relay builds them (no checks), so invalid ones reach the store too.
    return tuple.__new__(Event, (data, kind, event_id, retry))


async def _queue(event: Any, fast: bool) -> tuple[str, Any]:
    """What queueing ``event`` leaves in the group commit (or the exception)."""
    store = RedisStore("redis://127.0.0.1:1", append_window=3600.0)  # never written
    try:
        waiter = store._queue_checked("s", event) if fast else store._queue("s", check_event(event))
    except Exception as exc:
        return "raised", (type(exc), str(exc))
    finally:
        if store._flusher is not None:
            store._flusher.cancel()
    ((queued_waiter, *entry),) = store._commit._queue.values()
    assert queued_waiter is waiter
    assert not waiter.done()
    return "queued", (entry, store._flusher is not None, len(store._commit))


@settings(max_examples=300, deadline=None)
@given(
    data=texts,
    kind=kinds,
    event_id=st.one_of(st.none(), st.just("x-1")),
    retry=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_the_fast_queue_is_the_general_one(
    data: str, kind: str, event_id: str | None, retry: int | None
) -> None:
    event = _event(data, kind, event_id, retry)
    assert asyncio.run(_queue(event, fast=True)) == asyncio.run(_queue(event, fast=False))


def test_what_is_not_an_event_is_refused_alike() -> None:
    for thing in ("text", ("a", "message", None, None), None):
        assert asyncio.run(_queue(thing, fast=True)) == asyncio.run(_queue(thing, fast=False))
