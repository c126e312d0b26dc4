"""``MemoryStore.append_now``: ``append`` without waiting, for a producer that
appends from a callback; it keeps and refuses exactly what ``append`` does."""

from __future__ import annotations

import pytest
from streams_support import FakeClock

from ssegate import Event, StreamEnded
from ssegate.streams import CANCELLED, FAILED, MemoryStore
from ssegate.streams._store import format_id

pytestmark = pytest.mark.anyio


async def test_its_ids_and_events_are_append_s() -> None:
    now, later = MemoryStore(), MemoryStore()
    events = [Event("a"), Event("é", event="t"), Event('{"x":1}', event="text")]
    ids_now = [now.append_now("s", e) for e in events]
    ids_later = [await later.append("s", e) for e in events]
    epoch = now._streams["s"].epoch
    assert ids_now == [format_id(epoch, n) for n in (1, 2, 3)]
    assert [i.partition("-")[2] for i in ids_now] == [i.partition("-")[2] for i in ids_later]
    stored = now._streams["s"].events(0, 3)
    assert stored == [e.replace(id=i) for e, i in zip(events, ids_now, strict=True)]


def test_ids_past_their_width_stay_format_id_s() -> None:
    store = MemoryStore()
    store.append_now("s", Event("a"))
    state = store._streams["s"]
    state.last_seq = 10**13 - 1
    assert store.append_now("s", Event("b")) == format_id(state.epoch, 10**13)


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (Event("a", id="1"), "the store assigns ids"),
        (Event("\ud800"), "no lone surrogates"),
        (Event("ok", event="\udfff"), "no lone surrogates"),
    ],
)
def test_it_refuses_what_append_refuses(event: Event, error: str) -> None:
    store = MemoryStore()
    store.append_now("s", Event("first"))
    with pytest.raises(ValueError, match=error):
        store.append_now("s", event)
    with pytest.raises(ValueError, match="invalid stream name"):
        store.append_now("", Event("a"))
    assert store._streams["s"].last_seq == 1


async def test_an_ended_stream_and_a_lease_run_out_are_refused(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    store.append_now("ended", Event("a"))
    await store.end("ended", CANCELLED)
    with pytest.raises(StreamEnded, match="has ended \\(cancelled\\)"):
        store.append_now("ended", Event("b"))
    await store.acquire_lease("held", 5.0)
    store.append_now("held", Event("a"))
    clock.advance(4.9)
    store.append_now("held", Event("b"))
    clock.advance(0.1)
    with pytest.raises(StreamEnded, match="has ended \\(failed\\)"):
        store.append_now("held", Event("c"))
    info = await store.info("held")
    assert (info.length, info.outcome) == (2, FAILED)


async def test_an_expired_stream_s_name_is_free_again(clock: FakeClock) -> None:
    store = MemoryStore(ttl=10, clock=clock)
    store.append_now("s", Event("a"))
    await store.end("s")
    clock.advance(10)
    assert store.append_now("s", Event("again")).endswith("-000000000001")
