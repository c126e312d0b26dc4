"""``_chat._Late``: a streaming request still waiting for its provider after
``WATCH_AFTER_S`` starts watching its client, one loop timer for all of them;
one whose wait ended first never starts a watch and holds nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ssegate.gateway import _chat
from ssegate.gateway._chat import _Late, _Watch


class Client:
    """A request whose client leaves when told (``receive`` then says so)."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.received = 0

    async def receive(self) -> dict[str, Any]:
        self.received += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}


class Reader:
    def __init__(self) -> None:
        self.left = 0

    def leave(self) -> None:
        self.left += 1


def test_only_the_waits_still_going_at_their_deadline_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_chat, "WATCH_AFTER_S", 0.05)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        late = _Late.of(loop)
        assert _Late.of(loop) is late
        clients = [Client() for _ in range(3)]
        readers = [Reader() for _ in range(3)]
        watches = [_Watch(c, r) for c, r in zip(clients, readers, strict=True)]  # type: ignore[arg-type]
        began = loop.time()
        late.add(watches[0])
        late.add(watches[1])
        timer = late.timer
        assert timer is not None
        await asyncio.sleep(0.02)
        late.add(watches[2])
        assert late.timer is timer  # one timer, at the earliest deadline
        watches[0].settle()  # its provider answered in time
        assert watches[0].request is None
        assert watches[0].reader is None
        await asyncio.sleep(0.04)  # the first two deadlines passed
        assert watches[0].task is None
        assert watches[1].task is not None
        assert watches[2].task is None  # not yet: its deadline is 20 ms later
        assert loop.time() - began >= 0.05
        await asyncio.sleep(0.04)
        assert watches[2].task is not None
        assert late.timer is None
        assert not late.queue
        clients[1].gone.set()  # that client leaves while its provider thinks
        await asyncio.sleep(0.01)
        assert [r.left for r in readers] == [0, 1, 0]
        watches[1].settle()
        task = watches[2].task
        watches[2].settle()  # the provider answered: the watch stops
        await asyncio.sleep(0)
        assert task.cancelled()
        assert [c.received for c in clients] == [0, 1, 1]
        assert [r.left for r in readers] == [0, 1, 0]

    asyncio.run(main())


def test_each_loop_has_its_own() -> None:
    async def one() -> _Late:
        return _Late.of(asyncio.get_running_loop())

    first, second = asyncio.run(one()), asyncio.run(one())
    assert first is not second
    assert first.loop is not second.loop


class Clock:
    """The loop ``_Late`` sees: its time set by hand, its timers recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[float] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> str:
        self.timers.append(when)
        return f"timer at {when}"


def test_waits_that_ended_set_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The timer is set again only at the deadline of a wait still going: the
    settled watches before it leave the queue when it fires, none starts."""
    monkeypatch.setattr(_chat, "WATCH_AFTER_S", 1.0)
    clock = Clock()
    late = _Late(clock)  # type: ignore[arg-type]
    started: list[_Watch] = []
    monkeypatch.setattr(_Watch, "start", lambda self, loop: started.append(self))
    watches = [_Watch(Client(), Reader()) for _ in range(5)]  # type: ignore[arg-type]
    for at, watch in zip((0.0, 0.1, 0.2, 0.3, 0.4), watches, strict=True):
        clock.now = at
        late.add(watch)
    assert clock.timers == [1.0]  # one timer, at the first deadline
    for watch in (watches[0], watches[1], watches[2], watches[4]):
        watch.settle()  # their providers answered in time
    clock.now = 1.0
    late._due()
    assert started == []
    assert clock.timers == [1.0, 1.3]  # not 1.1 nor 1.2: those waits ended
    assert [w for _, w in late.queue] == [watches[3], watches[4]]
    clock.now = 1.3
    late._due()
    assert started == [watches[3]]  # still going at its deadline
    assert clock.timers == [1.0, 1.3]  # the one left had ended: no timer
    assert late.timer is None
    assert not late.queue
    late.add(watches[4])  # (settled: the queue starts again, as for a new one)
    assert clock.timers == [1.0, 1.3, 2.3]
