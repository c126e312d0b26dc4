"""Property: whatever byte the connection breaks at, every event arrives exactly once.

A real server sends ``n`` events with ids and breaks the connection after a
random number of bytes, several times (inside a field, between CR and LF,
inside the blank line that ends an event, ...); each reconnect resumes after
the ``Last-Event-ID`` the client sends. The client must deliver exactly the
``n`` events, in order: nothing lost to a cut, nothing repeated by a resume.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from client_scripts import MODES, Resume, Script, Step, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssegate import Event, ReconnectPolicy, encode

DATA = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"), max_size=12)


@pytest.mark.parametrize("mode", MODES)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.lists(DATA, min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4),
    crlf=st.booleans(),
)
def test_no_loss_no_duplicates(
    mode: str,
    script: Callable[[list[Step]], Script],
    data: list[str],
    cuts: list[int],
    crlf: bool,
) -> None:
    events = [Event(d, id=str(i)) for i, d in enumerate(data, 1)]
    blocks = tuple(encode(e) for e in events)
    if crlf:
        blocks = tuple(b.replace(b"\n", b"\r\n") for b in blocks)
    steps: list[Step] = [Resume(blocks, cut) for cut in cuts]
    sc = script([*steps, Resume(blocks)])
    policy = ReconnectPolicy(jitter=0.0, max_retries=len(cuts) + 2)

    out = run(mode, sc.url, policy=policy)

    assert out.error is None
    assert out.events == events
    assert sc.seen[-1].last_event_id == str(len(events))  # the final 204
