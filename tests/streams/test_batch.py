"""The group-commit decisions (``streams._batch``), driven by hand: no I/O, a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streams_support import FakeClock

from ssegate import StreamEnded
from ssegate.streams._batch import GroupCommit, encode_append

V = encode_append(b"data")


def error(stream: str, message: str) -> BaseException:
    return StreamEnded(f"{stream}: {message}")


def test_nothing_queued_is_never_due(clock: FakeClock) -> None:
    commit: GroupCommit[str] = GroupCommit(window=0.005)
    assert commit.due(clock()) is None
    assert len(commit) == 0


def test_without_a_window_an_append_is_due_at_once(clock: FakeClock) -> None:
    commit: GroupCommit[str] = GroupCommit()
    commit.add("w1", "s", V, clock())
    assert commit.due(clock()) == 0


def test_the_window_counts_from_the_oldest_queued_append(clock: FakeClock) -> None:
    commit: GroupCommit[str] = GroupCommit(window=0.005)
    commit.add("w1", "a", V, clock())
    clock.advance(0.002)
    commit.add("w2", "b", V, clock())
    assert commit.due(clock()) == pytest.approx(0.003)
    clock.advance(0.003)
    assert commit.due(clock()) == 0
    batch = commit.take()
    assert list(batch.waiters()) == ["w1", "w2"]
    assert commit.due(clock()) is None
    # The next append starts a new window.
    commit.add("w3", "a", V, clock())
    assert commit.due(clock()) == pytest.approx(0.005)


def test_the_interval_counts_from_the_last_write_taken(clock: FakeClock) -> None:
    commit: GroupCommit[str] = GroupCommit(interval=0.005)
    commit.add("w1", "a", V, clock())
    assert commit.due(clock()) == 0  # no write yet: at once
    assert list(commit.take(clock()).waiters()) == ["w1"]
    clock.advance(0.001)
    commit.add("w2", "a", V, clock())
    assert commit.due(clock()) == pytest.approx(0.004)
    clock.advance(0.004)
    assert commit.due(clock()) == 0
    commit.take(clock())
    # Idle for longer than the interval: an append is due at once.
    clock.advance(0.5)
    commit.add("w3", "a", V, clock())
    assert commit.due(clock()) == 0
    # A take without the time (the store closing) starts no interval.
    commit.take()
    commit.add("w4", "a", V, clock())
    assert commit.due(clock()) == 0


def test_a_full_batch_or_a_drain_is_due_before_its_interval(clock: FakeClock) -> None:
    commit: GroupCommit[int] = GroupCommit(interval=10.0, max_events=2)
    commit.add(0, "s", V, clock())
    commit.take(clock())
    commit.add(1, "s", V, clock())
    assert commit.due(clock()) == pytest.approx(10.0)
    commit.add(2, "s", V, clock())
    assert commit.due(clock()) == 0
    commit.take(clock())
    commit.add(3, "s", V, clock())
    commit.drain()
    assert commit.due(clock()) == 0


def test_a_full_batch_is_due_before_its_window(clock: FakeClock) -> None:
    commit: GroupCommit[int] = GroupCommit(window=10.0, max_events=3)
    for i in range(2):
        commit.add(i, "s", V, clock())
    assert commit.due(clock()) == pytest.approx(10.0)
    commit.add(2, "s", V, clock())
    assert commit.due(clock()) == 0


def test_a_batch_full_of_bytes_is_due_before_its_window(clock: FakeClock) -> None:
    commit: GroupCommit[int] = GroupCommit(window=10.0, max_bytes=10)
    commit.add(1, "s", b"12345", clock())
    assert commit.due(clock()) == pytest.approx(10.0)
    commit.add(2, "s", b"12345", clock())
    assert commit.due(clock()) == 0
    assert [list(r.waiters) for r in commit.take().runs] == [[1, 2]]


def test_draining_makes_everything_due_at_once(clock: FakeClock) -> None:
    commit: GroupCommit[str] = GroupCommit(window=3600.0)
    commit.add("w", "s", V, clock())
    commit.drain()
    assert commit.due(clock()) == 0


def test_take_groups_by_stream_keeping_each_streams_order(clock: FakeClock) -> None:
    commit: GroupCommit[str] = GroupCommit()
    for waiter, stream in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("c1", "c"), ("b2", "b")]:
        commit.add(waiter, stream, encode_append(waiter.encode()), clock(), waiter.upper())
    batch = commit.take()
    assert batch.events == 5
    assert batch.streams == ["a", "b", "c"]
    assert [r.waiters for r in batch.runs] == [["a1", "a2"], ["b1", "b2"], ["c1"]]
    assert [r.items for r in batch.runs] == [["A1", "A2"], ["B1", "B2"], ["C1"]]

    # Per stream: name after its length, number of appends, their size; then the appends.
    def e(data: bytes) -> bytes:  # no event type, no retry: two lengths 0
        return b"\0\0\0\2" + data + bytes(8)

    assert batch.blob() == (
        b"\0\0\0\1a" + b"\0\0\0\2\0\0\0\x1c" + e(b"a1") + e(b"a2")
        + b"\0\0\0\1b" + b"\0\0\0\2\0\0\0\x1c" + e(b"b1") + e(b"b2")
        + b"\0\0\0\1c" + b"\0\0\0\1\0\0\0\x0e" + e(b"c1")
    )  # fmt: skip
    assert encode_append(b"d", b"token", b"5") == (
        b"\0\0\0\1d" + b"\0\0\0\5token" + b"\0\0\0\1" + b"5"
    )
    assert len(commit) == 0


def test_take_stops_at_max_events_and_what_is_left_stays_due(clock: FakeClock) -> None:
    commit: GroupCommit[int] = GroupCommit(window=1.0, max_events=2)
    for i in range(5):
        commit.add(i, f"s{i % 2}", V, clock())
    assert [list(commit.take().waiters()) for _ in range(2)] == [[0, 1], [2, 3]]
    assert commit.due(clock()) == 0  # 4 has waited as long as the others: no new window
    assert list(commit.take().waiters()) == [4]
    assert commit.due(clock()) is None


def test_a_discarded_append_is_not_taken(clock: FakeClock) -> None:
    commit: GroupCommit[str] = GroupCommit()
    for w in ("w1", "w2", "w3"):
        commit.add(w, "s", V, clock())
    assert commit.discard("w2") is True
    assert commit.discard("w2") is False
    assert list(commit.take().waiters()) == ["w1", "w3"]
    assert commit.discard("w1") is False  # already taken: it goes with its write
    commit.add("w4", "s", V, clock())
    commit.discard("w4")
    assert commit.due(clock()) is None


def test_a_waiter_is_queued_once(clock: FakeClock) -> None:
    commit: GroupCommit[str] = GroupCommit()
    commit.add("w", "s", V, clock())
    with pytest.raises(ValueError, match="already queued"):
        commit.add("w", "t", V, clock())


def test_outcomes_give_each_waiter_its_own_id_or_error(clock: FakeClock) -> None:
    commit: GroupCommit[str] = GroupCommit()
    for waiter, stream in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("c1", "c"), ("c2", "c")]:
        commit.add(waiter, stream, V, clock())
    batch = commit.take()
    reply = [
        7, b"16",  # a: events 7 and 8, epoch 16 = 0x10
        1, [0, None, b"SSEGATE_ENDED done"],  # b: ended
        3, [1, b"4294967295", b"WRONGTYPE x"],  # c: one written, then an error
    ]  # fmt: skip
    outcomes = batch.outcomes(reply, error)
    got = {
        w: o if isinstance(o, str) else repr(o)
        for w, o in zip(batch.waiters(), outcomes, strict=True)
    }
    assert got == {
        "a1": "00000010-000000000007",
        "a2": "00000010-000000000008",
        "b1": repr(StreamEnded("b: SSEGATE_ENDED done")),
        "c1": "ffffffff-000000000003",
        "c2": repr(StreamEnded("c: WRONGTYPE x")),
    }


def test_lone_appends_each_get_their_own_streams_epoch(clock: FakeClock) -> None:
    """Runs of one append (the usual, taken the short way) among others: each id
    carries its own stream's epoch, and ``failed`` counts the appends refused."""
    commit: GroupCommit[str] = GroupCommit()
    for waiter, stream in [("a", "a"), ("b", "b"), ("c1", "c"), ("c2", "c"), ("d", "d")]:
        commit.add(waiter, stream, V, clock())
    commit.add("e", "e", V, clock())
    batch = commit.take()
    reply = [
        4, b"16",  # a: epoch 16 = 0x10
        9, b"16",  # b: the same epoch
        1, b"17",  # c: both written, another epoch
        2, b"16",  # d
        5, [0, None, b"SSEGATE_ENDED done"],  # e: ended
    ]  # fmt: skip
    outcomes = batch.outcomes(reply, error)
    assert outcomes[:5] == [
        "00000010-000000000004",
        "00000010-000000000009",
        "00000011-000000000001",
        "00000011-000000000002",
        "00000010-000000000002",
    ]
    assert repr(outcomes[5]) == repr(StreamEnded("e: SSEGATE_ENDED done"))
    assert batch.failed == 1
    assert [run.ids for run in batch.runs] == [
        ["00000010-000000000004"],
        ["00000010-000000000009"],
        ["00000011-000000000001", "00000011-000000000002"],
        ["00000010-000000000002"],
        [],
    ]


@pytest.mark.parametrize(
    "reply",
    [
        [1, b"5", 2],  # not two values per stream
        [b"x", b"5"],  # not a number
        [1, None],  # no epoch
        [1, b"zz"],  # not an epoch
        [1, [1, b"5"]],  # not written, epoch, error
        [1, [b"1", b"5", b""]],
    ],
)
def test_an_unexpected_reply_is_a_value_error(clock: FakeClock, reply: list[object]) -> None:
    commit: GroupCommit[str] = GroupCommit()
    commit.add("w", "s", V, clock())
    with pytest.raises(ValueError):  # noqa: PT011 - the message names what is wrong
        list(commit.take().outcomes(reply, error))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": -1}, "window"),
        ({"window": float("nan")}, "window"),
        ({"max_events": 0}, "max_events"),
        ({"max_bytes": 1.5}, "max_bytes"),
        ({"interval": -0.001}, "interval"),
    ],
)
def test_bad_options_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GroupCommit(**options)  # type: ignore[arg-type]


# A run of queue operations: add an append to stream 0-2, discard the append
# queued i-th (if still queued), or take a batch.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 2)),
        st.tuples(st.just("discard"), st.integers(0, 40)),
        st.tuples(st.just("take"), st.just(0)),
    ),
    max_size=60,
)


# No deadline: on a 2-core machine shared with other builds one example took
# 403 ms once (a timing flake, not a failure of the property).
@settings(deadline=None)
@given(operations, st.integers(1, 5))
def test_every_append_is_taken_once_in_its_streams_order_unless_discarded(
    ops: list[tuple[str, int]], max_events: int
) -> None:
    commit: GroupCommit[int] = GroupCommit(max_events=max_events)
    added: list[tuple[int, str]] = []
    discarded: set[int] = set()
    taken: list[int] = []
    for op, arg in [*ops, ("take", 0)]:
        if op == "add":
            waiter = len(added)
            added.append((waiter, f"s{arg}"))
            commit.add(waiter, f"s{arg}", V, 0.0)
        elif op == "discard":
            if commit.discard(arg):
                discarded.add(arg)
        else:
            while commit.due(0.0) is not None:
                batch = commit.take()
                assert 1 <= batch.events <= max_events
                for run in batch.runs:
                    assert all(added[w][1] == run.stream for w in run.waiters)
                taken += batch.waiters()
    assert len(taken) == len(set(taken))
    assert set(taken) == {w for w, _ in added} - discarded
    for stream in ("s0", "s1", "s2"):
        mine = [w for w in taken if added[w][1] == stream]
        assert mine == sorted(mine)  # a stream's appends keep their order
